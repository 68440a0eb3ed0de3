"""The server's configuration: one dataclass, loadable from a JSON file.

JSON rather than YAML keeps the dependency list as it is; every key is
optional and flags given on the command line override the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_ADDR = "127.0.0.1:5000"
MiB = 1024 * 1024


@dataclass
class Limits:
    """What one client, and all of them together, may hold. A client is its
    user when it authenticated, else its address. Past a cap the answer is 429
    TOOMANYREQUESTS with Retry-After."""
    max_manifest_bytes: int = 4 * MiB  # the spec asks for at least 4 MiB
    max_blob_bytes: int | None = None  # None: unlimited
    chunk_min_length: int = 1 * MiB  # advertised as OCI-Chunk-Min-Length
    max_concurrent_uploads: int = 512  # requests streaming a body at once, all clients
    max_client_uploads: int = 128  # the same, one client
    max_upload_sessions: int = 16384  # open upload sessions, all clients (each costs ~1 kB between requests)
    max_client_sessions: int = 1024  # the same, one client
    session_idle: float = 300.0  # an untouched session stops counting after this (it stays resumable)
    header_timeout: float = 60.0  # a request's headers must be complete this long after the connection
    #                               opened or the last answer (so it is also the keep-alive idle time)
    body_timeout: float = 60.0  # every body_timeout seconds a body must bring body_timeout * body_min_rate
    body_min_rate: int = 1024  # bytes (at least one), else the client is dropped (408)
    max_auth_pending: int = 8  # password checks one client may have queued; bcrypt runs one at a time per client
    tags_page_max: int = 10000  # largest `n` accepted for tags/list and _catalog


@dataclass
class GCOptions:
    interval: float = 0.0  # seconds between online collections; 0: never (use `soko gc`)
    grace: float = 3600.0  # blobs, links and manifests younger than this are kept
    untagged: bool = False  # also delete manifests that no tag or index reaches
    upload_ttl: float = 24 * 3600.0  # upload sessions idle this long are dropped


@dataclass
class TLSOptions:
    cert: str | None = None
    key: str | None = None
    self_signed: bool = False


@dataclass
class ServerConfig:
    addr: str = DEFAULT_ADDR
    root: str = "registry"
    tls: TLSOptions = field(default_factory=TLSOptions)
    htpasswd: str | None = None
    realm: str = "soko"
    read_only: bool = False
    readers: list[str] = field(default_factory=list)  # htpasswd users that may only pull (DENIED on push)
    delete_enabled: bool = True
    direct_io: bool = True  # write uploads with O_DIRECT (see directio.py)
    access_log: bool = False
    limits: Limits = field(default_factory=Limits)
    gc: GCOptions = field(default_factory=GCOptions)

    @property
    def host(self) -> str:
        return split_addr(self.addr)[0]

    @property
    def port(self) -> int:
        return split_addr(self.addr)[1]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServerConfig":
        cfg = _build(cls, data, "config")
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "ServerConfig":
        """Load a JSON config file; keyword overrides (flags) win over it."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except ValueError as e:
            raise ConfigError(f"config {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: top level must be an object")
        for k, v in overrides.items():
            if v is not None:
                data[k] = v
        return cls.from_dict(data)

    def validate(self) -> None:
        split_addr(self.addr)
        if bool(self.tls.cert) != bool(self.tls.key):
            raise ConfigError("tls: cert and key go together")
        if self.tls.cert and self.tls.self_signed:
            raise ConfigError("tls: give cert/key or self_signed, not both")
        if self.limits.max_manifest_bytes < 4 * MiB:
            raise ConfigError("limits.max_manifest_bytes must be at least 4 MiB")
        if self.gc.grace < 0 or self.gc.interval < 0 or self.gc.upload_ttl <= 0:
            raise ConfigError("gc: grace and interval must be >= 0, upload_ttl > 0")
        lim = self.limits
        for name in ("max_concurrent_uploads", "max_client_uploads", "max_upload_sessions", "max_client_sessions",
                     "session_idle", "header_timeout", "body_timeout", "max_auth_pending"):
            if getattr(lim, name) <= 0:
                raise ConfigError(f"limits.{name} must be > 0")
        if lim.body_min_rate < 0:
            raise ConfigError("limits.body_min_rate must be >= 0")


def split_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid address {addr!r} (want HOST:PORT)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be an object")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value, f"{where}.{name}")
            continue
        if current is not None and value is not None and not _same_kind(current, value):
            raise ConfigError(f"{where}.{name}: expected {type(current).__name__}, got {type(value).__name__}")
        kwargs[name] = value
    return cls(**kwargs)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))
