"""The server's configuration: dataclasses, loaded from one TOML file.

Every key is optional and flags given on the command line override the file
(registry/CONFIG.md lists them all). Each section is a dataclass whose field
types say what the file may hold (configfile.py builds them) and whose
`check(key)` says what makes a value wrong; a new section is a new field here
plus its dataclass, nothing else. Problems are ConfigErrors naming the file,
line and key, raised before anything listens.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from . import configfile
from .configfile import ConfigProblem, Duration, Key, show_key
from .sections import METRICS_OFF, MetadataOptions, MetricsOptions, NotificationOptions, ProxyOptions, StorageOptions

DEFAULT_ADDR = "127.0.0.1:5000"
MiB = 1024 * 1024
ACTIONS = ("pull", "push", "delete")
ANONYMOUS = "anonymous"
GROUP_PREFIX = "group:"
ROBOT_PREFIX = "robot$"


@dataclass
class Limits:
    """What one client, and all of them together, may hold. A client is its
    account when it authenticated, else its address. Past a cap the answer is
    429 TOOMANYREQUESTS with Retry-After."""
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

    def check(self, key: Key) -> None:
        if self.max_manifest_bytes < 4 * MiB:
            raise ConfigProblem((*key, "max_manifest_bytes"), "must be at least 4 MiB (4194304)")
        for name in ("max_concurrent_uploads", "max_client_uploads", "max_upload_sessions", "max_client_sessions",
                     "session_idle", "header_timeout", "body_timeout", "max_auth_pending", "tags_page_max"):
            if getattr(self, name) <= 0:
                raise ConfigProblem((*key, name), "must be > 0")
        if self.body_min_rate < 0:
            raise ConfigProblem((*key, "body_min_rate"), "must be >= 0")
        if self.max_blob_bytes is not None and self.max_blob_bytes <= 0:
            raise ConfigProblem((*key, "max_blob_bytes"), "must be > 0")


@dataclass
class GCOptions:
    interval: Duration = 0.0  # between online collections; 0: never (use `soko gc --registry`)
    grace: Duration = 3600.0  # blobs, links and manifests younger than this are kept
    untagged: bool = False  # also delete manifests that no tag or index reaches
    upload_ttl: Duration = 24 * 3600.0  # upload sessions idle this long are dropped

    def check(self, key: Key) -> None:
        if self.upload_ttl <= 0:
            raise ConfigProblem((*key, "upload_ttl"), "must be > 0")


@dataclass
class UIOptions:
    """The web UI under /ui/ (registry/server/ui/): on unless turned off."""
    enabled: bool = True  # `--no-ui` sets false
    session_ttl: Duration = 12 * 3600.0  # a sign-in lasts this long at most
    session_idle: Duration = 3600.0  # and ends after this long without a page

    def check(self, key: Key) -> None:
        for name in ("session_ttl", "session_idle"):
            if getattr(self, name) <= 0:
                raise ConfigProblem((*key, name), "must be > 0")


@dataclass
class TLSOptions:
    cert: str | None = None
    key: str | None = None
    self_signed: bool = False

    def check(self, key: Key) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigProblem((*key, "cert" if self.cert else "key"), "cert and key go together")
        if self.cert and self.self_signed:
            raise ConfigProblem((*key, "self_signed"), "give cert/key or self_signed, not both")


@dataclass
class TokenOptions:
    """Docker token authentication. Built in: soko's /token endpoint signs with
    `key` (generated under <root>/token/ when absent). External: tokens of
    another issuer, trusted through `rootcertbundle`, as distribution's auth.token."""
    key: str | None = None  # private key PEM: RSA (RS256) or EC P-256 (ES256)
    cert: str | None = None  # its certificate: what other registries' rootcertbundle trusts (checked against key)
    realm: str | None = None  # default: <scheme>://<the Host the client used>/token
    service: str | None = None  # default: the listening HOST:PORT
    issuer: str = "soko"
    expiration: Duration = 300.0  # access tokens
    refresh_expiration: Duration = 30 * 86400.0  # refresh (identity) tokens handed to `docker login`
    rootcertbundle: str | None = None  # external issuer: certificates whose keys sign tokens
    basic: bool = True  # also accept Basic credentials on /v2/ (false: tokens only, as distribution)

    @property
    def external(self) -> bool:
        return self.rootcertbundle is not None

    def check(self, key: Key) -> None:
        if self.external:
            if self.key or self.cert:
                raise ConfigProblem((*key, "key" if self.key else "cert"),
                                    "give key/cert (built-in issuer) or rootcertbundle (external issuer), not both")
            if not self.realm:
                raise ConfigProblem((*key, "realm"), "an external issuer needs its realm (the token URL)")
        if self.realm is not None and not self.realm.startswith(("http://", "https://")):
            raise ConfigProblem((*key, "realm"), f"not an http(s) URL: {self.realm!r}")
        if self.cert and not self.key:
            raise ConfigProblem((*key, "key"), "cert needs the key it certifies")
        if self.expiration <= 0 or self.refresh_expiration <= 0:
            raise ConfigProblem((*key, "expiration" if self.expiration <= 0 else "refresh_expiration"),
                                "must be > 0")
        if not self.issuer:
            raise ConfigProblem((*key, "issuer"), "must not be empty")
        from .keys import check_token_files

        check_token_files(self, key)


@dataclass
class Robot:
    """A robot account `robot$NAME`: a generated secret (its bcrypt hash here),
    confined to some namespaces, optionally expiring."""
    secret: str = ""
    namespaces: list[str] = field(default_factory=list)
    expires: datetime.datetime | None = None

    def check(self, key: Key) -> None:
        if not self.secret:
            raise ConfigProblem((*key, "secret"), "a robot needs its secret's bcrypt hash "
                                                  "(soko registry robot-secret makes one)")
        check_bcrypt(self.secret, (*key, "secret"))
        if not self.namespaces:
            raise ConfigProblem((*key, "namespaces"), "a robot needs at least one namespace")
        for i, ns in enumerate(self.namespaces):
            check_namespace(ns, (*key, "namespaces", i))


@dataclass
class AccessRule:
    account: str = ""  # a user, "group:NAME", a robot, or "anonymous"
    repository: str = ""  # glob over repository names
    actions: list[str] = field(default_factory=list)  # pull, push, delete, "*"

    def check(self, key: Key) -> None:
        for name in ("account", "repository"):
            if not getattr(self, name):
                raise ConfigProblem((*key, name), "required")
        check_glob(self.repository, (*key, "repository"))
        for i, a in enumerate(self.actions):
            if a not in (*ACTIONS, "*"):
                raise ConfigProblem((*key, "actions", i), f"unknown action {a!r} (pull, push, delete or *)")

    @property
    def granted(self) -> frozenset[str]:
        return frozenset(ACTIONS) if "*" in self.actions else frozenset(self.actions)


@dataclass
class ImmutableRule:
    repository: str = ""  # glob over repository names
    tags: str = ""  # glob over tags

    def check(self, key: Key) -> None:
        for name in ("repository", "tags"):
            if not getattr(self, name):
                raise ConfigProblem((*key, name), "required")
            check_glob(getattr(self, name), (*key, name))


@dataclass
class RetentionRule:
    repository: str = ""  # glob over repository names
    keep_last: int | None = None  # the newest N tags (by push time) stay
    keep_days: float | None = None  # tags pushed within D days stay

    def check(self, key: Key) -> None:
        if not self.repository:
            raise ConfigProblem((*key, "repository"), "required")
        check_glob(self.repository, (*key, "repository"))
        if self.keep_last is None and self.keep_days is None:
            raise ConfigProblem(key, "give keep_last, keep_days or both")
        if self.keep_last is not None and self.keep_last < 0:
            raise ConfigProblem((*key, "keep_last"), "must be >= 0")
        if self.keep_days is not None and self.keep_days < 0:
            raise ConfigProblem((*key, "keep_days"), "must be >= 0")


@dataclass
class ServerConfig:
    addr: str = DEFAULT_ADDR
    root: str = "registry"
    audit_log: str | None = None  # JSON lines of who pushed, pulled, deleted, logged in or was denied
    tls: TLSOptions = field(default_factory=TLSOptions)
    htpasswd: str | None = None  # users from an htpasswd file (bcrypt), beside [users]
    realm: str = "soko"  # of Basic challenges
    read_only: bool = False
    readers: list[str] = field(default_factory=list)  # accounts that may only pull, whatever the rules say
    delete_enabled: bool = True
    direct_io: bool = False  # write uploads with O_DIRECT, not through the page cache (storage/content/dirwriter.py)
    access_log: bool = False
    token: TokenOptions | None = None  # Docker token auth (absent: Basic auth when there are accounts)
    users: dict[str, str] = field(default_factory=dict)  # name -> bcrypt hash
    groups: dict[str, list[str]] = field(default_factory=dict)  # name -> user names
    robots: dict[str, Robot] = field(default_factory=dict)  # "robot$NAME" -> robot
    access: list[AccessRule] = field(default_factory=list)  # first matching rule wins (access.py)
    quotas: dict[str, int] = field(default_factory=dict)  # namespace -> bytes of unique blobs
    immutable: list[ImmutableRule] = field(default_factory=list)
    retention: list[RetentionRule] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    gc: GCOptions = field(default_factory=GCOptions)
    metrics: MetricsOptions = field(default_factory=lambda: MetricsOptions(METRICS_OFF))  # [metrics] absent: off
    notifications: NotificationOptions = field(default_factory=NotificationOptions)
    proxy: ProxyOptions | None = None  # pull-through cache
    ui: UIOptions = field(default_factory=UIOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    metadata: MetadataOptions = field(default_factory=MetadataOptions)  # SQLite in the root, or PostgreSQL


    @property
    def host(self) -> str:
        return split_addr(self.addr)[0]

    @property
    def port(self) -> int:
        return split_addr(self.addr)[1]

    @property
    def has_accounts(self) -> bool:
        return bool(self.users or self.robots or self.htpasswd)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServerConfig":
        """A config from parsed data (what the file would hold); errors name the key."""
        try:
            cfg = configfile.build(cls, data)
            check_all(cfg)
        except ConfigProblem as p:
            raise ConfigError(f"config: {show_key(p.key)}: {p.message}") from None
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, defaults: dict | None = None, **overrides: Any) -> "ServerConfig":
        """Load a TOML config file over `defaults`; keyword overrides (flags, nested
        dicts for tables, None for a flag not given) win over it."""
        return configfile.load(path, cls, overrides, check_all, defaults)

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any],
             defaults: dict | None = None) -> "ServerConfig":
        """The config of `soko serve`: the file (if any) over defaults, flags over both."""
        return configfile.load(path or None, cls, overrides, check_all, defaults)

    def validate(self) -> None:
        """Check a config built in code (ConfigError naming the key)."""
        try:
            check_all(self)
        except ConfigProblem as p:
            raise ConfigError(f"config: {show_key(p.key)}: {p.message}") from None

    def check(self, key: Key) -> None:
        try:
            split_addr(self.addr)
        except ConfigError as e:
            raise ConfigProblem(("addr",), str(e)) from None
        if self.audit_log is not None and not self.audit_log:
            raise ConfigProblem(("audit_log",), "must be a file path")
        htpasswd_users = self.htpasswd_users()
        for name, hashed in self.users.items():
            check_account_name(name, ("users", name))
            check_bcrypt(hashed, ("users", name))
            if name in htpasswd_users:
                raise ConfigProblem(("users", name), f"user {name!r} is also in the htpasswd file {self.htpasswd}")
        users = set(self.users) | set(htpasswd_users)
        for group, members in self.groups.items():
            check_namespace(group, ("groups", group), what="group name")
            for i, m in enumerate(members):
                if m not in users:
                    raise ConfigProblem(("groups", group, i), f"unknown user {m!r}")
        for name in self.robots:
            if not name.startswith(ROBOT_PREFIX) or len(name) == len(ROBOT_PREFIX):
                raise ConfigProblem(("robots", name), f"robot names start with {ROBOT_PREFIX!r}: {name!r}")
            check_namespace(name[len(ROBOT_PREFIX):], ("robots", name), what="robot name")
        for i, rule in enumerate(self.access):
            a = rule.account
            known = (a == ANONYMOUS or a in users or a in self.robots
                     or (a.startswith(GROUP_PREFIX) and a[len(GROUP_PREFIX):] in self.groups))
            if not known:
                what = "group" if a.startswith(GROUP_PREFIX) else "robot" if a.startswith(ROBOT_PREFIX) else "user"
                raise ConfigProblem(("access", i, "account"), f"unknown {what} {a!r}")
        for i, r in enumerate(self.readers):
            if r not in users and r not in self.robots:
                raise ConfigProblem(("readers", i), f"unknown account {r!r}")
        account = self.metrics.account
        if account is not None and account not in users and account not in self.robots:
            raise ConfigProblem(("metrics", "access"), f"unknown account {account!r} (want \"open\", \"off\" or "
                                                       f"an account name)")
        for ns, quota in self.quotas.items():
            check_namespace(ns, ("quotas", ns))
            if quota < 0:
                raise ConfigProblem(("quotas", ns), "must be >= 0 bytes")

    def htpasswd_users(self) -> dict[str, bytes]:
        if not self.htpasswd:
            return {}
        from .passwords import load_htpasswd

        return load_htpasswd(self.htpasswd)


def flag_overrides(addr: str | None = None, root: str | None = None, htpasswd: str | None = None,
                   read_only: bool = False, tls_cert: str | None = None, tls_key: str | None = None,
                   tls_self_signed: bool = False, token: bool = False, token_key: str | None = None,
                   token_realm: str | None = None, token_issuer: str | None = None,
                   token_service: str | None = None, token_cert: str | None = None,
                   audit_log: str | None = None, gc_interval: float | None = None,
                   proxy: str | None = None, no_ui: bool = False, storage: str | None = None,
                   redirect: bool = False, metadata: str | None = None) -> dict[str, Any]:
    """Command-line flags as config overrides (one mapping for `soko serve` and
    `python -m registry.server`). `--token-cert` is an external issuer's
    certificate (distribution's rootcertbundle), `--token` the built-in issuer,
    `--proxy URL` the pull-through cache's remote, `--storage URL` the blob store,
    `--metadata URL` where the metadata lives."""
    out: dict[str, Any] = {"addr": addr, "root": root, "htpasswd": htpasswd, "audit_log": audit_log,
                           "read_only": True if read_only else None}
    if tls_cert or tls_key or tls_self_signed:
        out["tls"] = {"cert": tls_cert, "key": tls_key, "self_signed": True if tls_self_signed else None}
    tok = {"key": token_key, "realm": token_realm, "issuer": token_issuer, "service": token_service,
           "rootcertbundle": token_cert}
    if token or any(v is not None for v in tok.values()):
        out["token"] = tok
    if gc_interval is not None:
        out["gc"] = {"interval": gc_interval}
    if proxy is not None:
        out["proxy"] = {"remoteurl": proxy}
    if no_ui:
        out["ui"] = {"enabled": False}
    if storage is not None or redirect:
        out["storage"] = {"url": storage, "redirect": True if redirect else None}
    if metadata is not None:
        out["metadata"] = {"url": metadata}

    return out


def check_all(cfg: Any, key: Key = ()) -> None:
    """Run `check(key)` of every dataclass in the tree, innermost first."""
    for name, value, sub in _children(cfg, key):
        if is_dataclass(value):
            check_all(value, sub)
    if hasattr(cfg, "check"):
        cfg.check(key)


def _children(obj: Any, key: Key) -> Iterator[tuple[str, Any, Key]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            for i, v in enumerate(value):
                yield f.name, v, (*key, f.name, i)
        elif isinstance(value, dict):
            for k, v in value.items():
                yield f.name, v, (*key, f.name, k)
        else:
            yield f.name, value, (*key, f.name)


def check_glob(pattern: str, key: Key) -> None:
    from .globs import GlobError, compile_glob

    try:
        compile_glob(pattern)
    except GlobError as e:
        raise ConfigProblem(key, f"bad glob {pattern!r}: {e}") from None


def check_bcrypt(hashed: str, key: Key) -> None:
    from .passwords import is_bcrypt

    if not is_bcrypt(hashed):
        raise ConfigProblem(key, "not a bcrypt hash (want $2y$/$2b$/$2a$..., as htpasswd -B writes)")


def check_namespace(name: str, key: Key, what: str = "namespace") -> None:
    from storage.references import PATH_RE

    if "/" in name or not PATH_RE.match(name):
        raise ConfigProblem(key, f"invalid {what} {name!r} (lower-case letters, digits, . _ -)")


def check_account_name(name: str, key: Key) -> None:
    if name == ANONYMOUS or name.startswith((GROUP_PREFIX, ROBOT_PREFIX)) or not name or ":" in name:
        raise ConfigProblem(key, f"{name!r} cannot be a user name (reserved or contains ':')")


def split_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid address {addr!r} (want HOST:PORT)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def namespace_of(repository: str) -> str:
    """The first path component: `team` of `team/app/x`; a one-component name is its own namespace."""
    return repository.split("/", 1)[0]
