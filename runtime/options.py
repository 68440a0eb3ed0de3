"""`soko run` options as data, plus parsers for their text forms.

The command line fills a RunOptions; everything below works on it. Parsing
helpers raise InvalidOption with a one-line reason so the CLI can report
bad usage without knowing the rules.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import InvalidOption

RUNTIMES = ("builtin", "runc", "crun")
PREDEFINED_NETWORKS = ("none", "host", "bridge", "default")
NETWORK_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"  # --network's and `network create`'s (Docker's)
# Patterns as strings: `re` compiles (and caches) only those a run needs.
_VOLUME_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
_CONTAINER_NAME = r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
_ENV_KEY = r"^[^=\s]+$"
_SIZE = r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$"


@dataclass(frozen=True)
class Volume:
    """-v SRC:DST[:OPTS]: a host path (bind) or a named volume kept in the store."""
    source: str
    target: str
    read_only: bool = False
    named: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A --tmpfs DIR[:OPTS], parsed."""
    target: str
    options: tuple[str, ...] = ()


@dataclass
class RunOptions:
    """What `run` and `create` take from the command line (Docker's flags), before the image is known."""
    command: list[str] = field(default_factory=list)  # COMMAND [ARG...]; replaces Cmd
    entrypoint: str | None = None  # --entrypoint; "" clears the image's
    rm: bool = False
    interactive: bool = False
    tty: bool = False
    name: str | None = None
    env: list[str] = field(default_factory=list)  # -e K=V or K (from soko's environment)
    env_files: list[str] = field(default_factory=list)  # --env-file, read before -e
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    volumes: list[str] = field(default_factory=list)  # -v text forms
    tmpfs: list[str] = field(default_factory=list)  # --tmpfs DIR[:OPTS]
    read_only: bool = False
    network: str = "default"  # default (= bridge) | bridge | none | host | a user-defined network
    network_aliases: list[str] = field(default_factory=list)  # --network-alias, user networks only
    memory: int | None = None  # bytes; parse_size("32m")
    cpus: float | None = None
    pids_limit: int | None = None  # 0 or -1: unlimited, as in Docker
    runtime: str = "builtin"
    security_opt: list[str] = field(default_factory=list)  # --security-opt seccomp=unconfined|FILE
    detach: bool = False  # -d: a monitor process keeps the container (monitor.py)
    restart: str = "no"  # --restart no|on-failure[:N]|always|unless-stopped
    labels: list[str] = field(default_factory=list)  # -l K=V
    publish: list[str] = field(default_factory=list)  # -p [IP:]HOST:CONTAINER[/PROTO], parsed, kept
    publish_all: bool = False  # -P
    health_cmd: str | None = None
    health_interval: str | None = None  # Go durations
    health_timeout: str | None = None
    health_start_period: str | None = None
    health_retries: int | None = None
    no_healthcheck: bool = False
    stop_signal: str | None = None
    stop_timeout: int | None = None  # seconds; Docker's default 10

    def seccomp_choice(self) -> str:
        """"default", "unconfined" or a profile file (see seccomp.parse_option)."""
        from .seccomp import parse_option

        return parse_option(self.security_opt)

    def validate(self) -> None:
        if self.runtime not in RUNTIMES:
            raise InvalidOption(f"unknown runtime {self.runtime!r} (builtin, runc or crun)")
        if self.network.startswith("container:"):
            raise InvalidOption("--network container:NAME is not supported (bridge, none, host or a network)")
        if not re.match(NETWORK_NAME, self.network):
            raise InvalidOption(f"invalid network name {self.network!r}")
        if self.network_aliases and self.network in PREDEFINED_NETWORKS:
            raise InvalidOption("network-scoped alias is supported only for containers in user defined networks")
        if (self.publish or self.publish_all) and self.network == "none":
            raise InvalidOption("conflicting options: port publishing and the container type network mode")
        if self.name is not None and not re.match(_CONTAINER_NAME, self.name):
            raise InvalidOption(f"invalid container name {self.name!r}: "
                                "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if self.memory is not None and self.memory < 6 * 1024 * 1024:
            raise InvalidOption("minimum memory limit allowed is 6MB")
        if self.cpus is not None and not (0.01 <= self.cpus <= os.cpu_count() * 1.0):
            raise InvalidOption(f"range of CPUs is from 0.01 to {os.cpu_count()}.00, as there are only "
                                f"{os.cpu_count()} CPUs available")
        if self.pids_limit is not None and self.pids_limit < -1:
            raise InvalidOption("--pids-limit must be positive (0 or -1: unlimited)")
        if self.hostname is not None and self.network == "host":
            raise InvalidOption("conflicting options: hostname and the network mode")
        if self.hostname is not None and not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$", self.hostname):
            raise InvalidOption(f"invalid hostname {self.hostname!r}")
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise InvalidOption(f"the working directory '{self.workdir}' is invalid, it needs to be an "
                                "absolute path")
        for v in self.volumes:
            parse_volume(v)
        for t in self.tmpfs:
            parse_tmpfs(t)
        for e in self.env:
            parse_env_entry(e)
        self.seccomp_choice()
        from .service import RestartPolicy, parse_signal

        if RestartPolicy.parse(self.restart).name != "no" and self.rm:
            raise InvalidOption("conflicting options: --restart and --rm")
        if self.stop_signal is not None:
            parse_signal(self.stop_signal)
        self.parsed_labels()
        for p in self.publish:
            parse_publish(p)

    def parsed_labels(self) -> dict[str, str]:
        out = {}
        for text in self.labels:
            key, _, value = text.partition("=")
            if not key:
                raise InvalidOption(f"invalid label {text!r}")
            out[key] = value
        return out

    def parsed_volumes(self) -> list[Volume]:
        return [parse_volume(v) for v in self.volumes]

    def parsed_tmpfs(self) -> list[Tmpfs]:
        return [parse_tmpfs(t) for t in self.tmpfs]


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Docker's RAMInBytes: `32m`, `1g`, `512k`, `1024` (bytes)."""
    m = re.match(_SIZE, text.strip(), re.IGNORECASE)
    if not m:
        raise InvalidOption(f"invalid size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_cpus(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InvalidOption(f"invalid value {text!r} for --cpus") from None
    return v


def parse_env_entry(text: str, environ: dict[str, str] | None = None) -> str | None:
    """`K=V` stays; `K` takes soko's own value, or is dropped when unset (Docker's rule)."""
    key, eq, _ = text.partition("=")
    if not key or not re.match(_ENV_KEY, key):
        raise InvalidOption(f"invalid environment variable: {text!r}")
    if eq:
        return text
    value = (os.environ if environ is None else environ).get(key)
    return None if value is None else f"{key}={value}"


def parse_env_file(path: str, environ: dict[str, str] | None = None) -> list[str]:
    """--env-file: one K=V (or K) per line; blank lines and # comments skipped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InvalidOption(f"open {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOption(f"env file {path} is not valid UTF-8") from None
    out: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        key = stripped.split("=", 1)[0]
        if " " in key or "\t" in key:
            raise InvalidOption(f"{path}:{n}: variable '{key}' contains whitespaces")
        entry = parse_env_entry(stripped if "=" in stripped else stripped.rstrip(), environ)
        if entry is not None:
            out.append(entry)
    return out


def parse_volume(text: str) -> Volume:
    parts = text.split(":")
    if len(parts) == 1:
        raise InvalidOption(f"invalid volume {text!r}: anonymous volumes are not supported, "
                            "use SRC:DST")
    if len(parts) > 3:
        raise InvalidOption(f"invalid volume specification: {text!r}")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    ro = False
    for opt in mode.split(","):
        if opt == "ro":
            ro = True
        elif opt in ("rw", "z", "Z", "private", "rprivate", ""):
            pass
        else:
            raise InvalidOption(f"invalid volume mode {opt!r} in {text!r}")
    if not dst.startswith("/"):
        raise InvalidOption(f"invalid volume {text!r}: the destination must be an absolute path")
    if dst.rstrip("/") == "":
        raise InvalidOption(f"invalid volume {text!r}: the destination cannot be '/'")
    if src.startswith("/"):
        return Volume(os.path.normpath(src), dst, ro, False)
    if not re.match(_VOLUME_NAME, src):
        raise InvalidOption(f"invalid volume name {src!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; "
                            "a host directory must be an absolute path")
    return Volume(src, dst, ro, True)


def parse_tmpfs(text: str) -> Tmpfs:
    target, _, opts = text.partition(":")
    if not target.startswith("/") or target.rstrip("/") == "":
        raise InvalidOption(f"invalid tmpfs {text!r}: the mount point must be an absolute path other than /")
    options = tuple(o for o in opts.split(",") if o)
    for o in options:
        if not re.match(r"^[a-z_]+(=[A-Za-z0-9_.%:-]+)?$", o):
            raise InvalidOption(f"invalid tmpfs option {o!r}")
    return Tmpfs(target, options)


def parse_publish(text: str) -> tuple[str, str, str, str]:
    """-p [IP:][HOST:]CONTAINER[/PROTO] -> (ip, host port or range, container port, proto)."""
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidOption(f"invalid protocol {proto!r} in -p {text!r}")
    if spec.startswith("["):  # [v6]:host:container
        ip, _, rest = spec[1:].partition("]")
        parts = [ip] + rest.lstrip(":").split(":")
    else:
        parts = spec.split(":")
    if len(parts) == 1:
        ip, host, cport = "", "", parts[0]
    elif len(parts) == 2:
        ip, (host, cport) = "", parts
    elif len(parts) == 3:
        ip, host, cport = parts
    else:
        raise InvalidOption(f"invalid -p {text!r}: [IP:][HOST:]CONTAINER[/PROTO]")
    port = r"^\d+(-\d+)?$"
    if not re.match(port, cport) or (host and not re.match(port, host)):
        raise InvalidOption(f"invalid port in -p {text!r}")
    return ip, host, cport, proto
