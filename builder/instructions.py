"""Parsed instructions -> typed commands, checked for shape before anything runs.

Checks here need no build state (argument counts, allowed flags, JSON
forms), so a malformed Dockerfile fails before the first step with
`Dockerfile:LINE: message`. Variables are expanded later, at dispatch,
because their values depend on the stage's ARG and ENV state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import DockerfileError
from .expand import split_raw_words
from .mountspec import MountSpec, parse_mount
from .parse import Heredoc, Instruction, parse_line

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


@dataclass
class Command:
    """One instruction of a Dockerfile, converted: its parsed form, and the fields of its kind below."""
    inst: Instruction

    @property
    def line(self) -> int:
        return self.inst.line

    @property
    def cmd(self) -> str:
        return self.inst.cmd


@dataclass
class From(Command):
    """FROM image [AS name]: a stage's base, unexpanded (a global ARG may name it)."""
    image: str = ""
    name: str | None = None
    platform: str | None = None


@dataclass
class KeyValues(Command):
    """ENV, LABEL and ARG: (key, value) pairs still unexpanded; an ARG without default has value None."""
    pairs: list[tuple[str, str | None]] = field(default_factory=list)


# A kind that adds no field is a plain subclass: it inherits __init__, __repr__ and __eq__ (which
# compare exact classes) from its dataclass; decorating it again made them anew (~0.15 ms each, on
# every build's start).
class Env(KeyValues):
    """ENV: variables the image and later steps see."""


class Label(KeyValues):
    """LABEL: metadata in the image's config."""


class Arg(KeyValues):
    """ARG: a build argument, with its default."""


@dataclass
class Run(Command):
    """RUN: a command, its --mount, --network and heredocs."""
    exec_form: list[str] | None = None  # JSON form
    shell: str = ""                      # shell form (the text as written)
    network: str | None = None
    heredocs: list[Heredoc] = field(default_factory=list)
    mounts: list[MountSpec] = field(default_factory=list)  # --mount, checked, variables not yet expanded


@dataclass
class Copy(Command):
    """COPY and ADD: sources, destination and BuildKit's flags."""
    sources: list[str] = field(default_factory=list)   # unexpanded; `<<NAME` for heredocs
    dest: str = ""
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    excludes: list[str] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    parents: bool = False
    # ADD only
    checksum: str | None = None
    unpack: bool | None = None
    keep_git_dir: bool | None = None

    @property
    def is_add(self) -> bool:
        return self.inst.cmd == "ADD"


@dataclass
class Words(Command):
    """EXPOSE and VOLUME: a list of words (VOLUME also takes JSON)."""
    words: list[str] = field(default_factory=list)


class Expose(Words):
    """EXPOSE: ports, kept in the config."""


class Volume(Words):
    """VOLUME: paths made volumes when a container runs."""


@dataclass
class Text(Command):
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: one string, expanded as one word."""
    text: str = ""


class Workdir(Text):
    """WORKDIR: the directory later steps and the container start in."""


class User(Text):
    """USER: who later steps and the container run as."""


class StopSignal(Text):
    """STOPSIGNAL: the signal that stops a container."""


class Maintainer(Text):
    """MAINTAINER: the deprecated author field."""


@dataclass
class CmdLike(Command):
    """CMD and ENTRYPOINT."""
    exec_form: list[str] | None = None
    shell: str = ""


class Cmd(CmdLike):
    """CMD: the default command."""


class Entrypoint(CmdLike):
    """ENTRYPOINT: the command CMD's words are given to."""


@dataclass
class Shell(Command):
    """SHELL: the shell later shell-form steps run with."""
    argv: list[str] = field(default_factory=list)


@dataclass
class Healthcheck(Command):
    """HEALTHCHECK: the test and its timings, or NONE."""
    test: list[str] = field(default_factory=list)  # ["NONE"], ["CMD", ...] or ["CMD-SHELL", cmd]
    interval: int = 0       # nanoseconds, 0 = inherit the default
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass
class Onbuild(Command):
    """ONBUILD: a trigger kept for images built FROM this one."""
    expression: str = ""
    trigger: Command | None = None


_FLAGS: dict[str, dict[str, str]] = {
    # flag -> kind: "str", "bool", "list", "reject"
    "FROM": {"platform": "str"},
    "RUN": {"network": "str", "mount": "list", "security": "str", "device": "reject"},
    "COPY": {"from": "str", "chown": "str", "chmod": "str", "link": "bool", "exclude": "list",
             "parents": "bool"},
    "ADD": {"chown": "str", "chmod": "str", "link": "bool", "checksum": "str", "exclude": "list",
            "keep-git-dir": "bool", "unpack": "bool"},
    "HEALTHCHECK": {"interval": "str", "timeout": "str", "start-period": "str", "start-interval": "str",
                    "retries": "str"},
}


def _flags(inst: Instruction, filename: str) -> dict[str, object]:
    allowed = _FLAGS.get(inst.cmd, {})
    out: dict[str, object] = {}
    for f in inst.flags:
        kind = allowed.get(f.name)
        if kind is None:
            raise DockerfileError(f"unknown flag: --{f.name}", inst.line, filename)
        if kind == "reject":
            raise DockerfileError(f"{inst.cmd} --{f.name} is not supported by soko yet", inst.line, filename)
        if kind == "list":
            if f.value is None:
                raise DockerfileError(f"missing a value on flag: --{f.name}", inst.line, filename)
            out.setdefault(f.name, [])
            out[f.name].append(f.value)  # type: ignore[union-attr]
            continue
        if f.name in out:
            raise DockerfileError(f"duplicate flag specified: --{f.name}", inst.line, filename)
        if kind == "bool":
            if f.value is None or f.value.lower() == "true":
                out[f.name] = True
            elif f.value.lower() == "false":
                out[f.name] = False
            else:
                raise DockerfileError(f"expecting boolean value for flag --{f.name}, not: {f.value}",
                                      inst.line, filename)
        else:
            if f.value is None:
                raise DockerfileError(f"missing a value on flag: --{f.name}", inst.line, filename)
            out[f.name] = f.value
    return out


def _pairs(inst: Instruction, filename: str, legacy: bool) -> list[tuple[str, str | None]]:
    """ENV/LABEL `k=v ...` (and the legacy `k v` form), ARG `k[=v] ...`."""
    words = split_raw_words(inst.args)
    if not words:
        raise DockerfileError(f"{inst.cmd} requires at least one argument", inst.line, filename)
    if legacy and "=" not in words[0]:
        parts = inst.args.strip().split(None, 1)
        if len(parts) < 2:
            raise DockerfileError(f"{inst.cmd} must have two arguments", inst.line, filename)
        return [(parts[0], parts[1])]
    out: list[tuple[str, str | None]] = []
    for w in words:
        if "=" not in w:
            if legacy:
                raise DockerfileError(f"syntax error - can't find = in {w!r}. Must be of the form: name=value",
                                      inst.line, filename)
            out.append((w, None))
            continue
        k, v = w.split("=", 1)
        if not k:
            raise DockerfileError(f"{inst.cmd} names can not be blank", inst.line, filename)
        out.append((k, v))
    return out


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration subset Docker accepts: `1h2m3.5s`, `300ms`, `0`... -> nanoseconds."""
    units = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
    if text == "0":
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return int(sum(float(a) * units[b] for a, b in parts))


def convert(inst: Instruction, filename: str = "Dockerfile") -> Command:
    """The typed command for one instruction (DockerfileError when malformed)."""
    err = lambda msg: DockerfileError(msg, inst.line, filename)  # noqa: E731
    cmd = inst.cmd
    if cmd not in _BUILDERS:
        raise err(f"unknown instruction: {cmd}")
    flags = _flags(inst, filename)
    return _BUILDERS[cmd](inst, flags, err, filename)


def _from(inst, flags, err, filename):
    words = inst.args.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise err("FROM requires either one or three arguments")
    name = None
    if len(words) == 3:
        name = words[2].lower()
        if not _STAGE_NAME.match(name):
            raise err(f"invalid name for build stage: {words[2]!r}, name can't start with a number "
                      "or contain symbols")
    return From(inst, words[0], name, flags.get("platform"))


def _run(inst, flags, err, filename):
    network = flags.get("network")
    if network is not None and network not in ("default", "none", "host"):
        raise err(f"unsupported network mode {network!r} (default, none or host)")
    security = flags.get("security")
    if security not in (None, "sandbox"):
        raise err(f"RUN --security={security} is not supported by soko")
    if not inst.args:
        raise err("RUN requires at least one argument")
    exec_form = None if inst.heredocs else inst.json_args()
    mounts = []
    for text in flags.get("mount", []):  # type: ignore[union-attr]
        try:
            mounts.append(parse_mount(text))
        except ValueError as e:
            raise err(f"RUN --mount={text}: {e}") from None
    targets = [m.options["target"] for m in mounts if m.options.get("target")]
    if len(set(targets)) != len(targets):
        raise err("RUN --mount: two mounts on the same target")
    return Run(inst, exec_form, inst.args, network, list(inst.heredocs), mounts)


def _copy(inst, flags, err, filename):
    args = inst.json_args()
    if args is None:
        args = inst.args.split()
    if len(args) < 2:
        raise err(f"{inst.cmd} requires at least two arguments, but only {len(args)} provided. "
                  "Destination could not be determined")
    c = Copy(inst, args[:-1], args[-1], flags.get("from"), flags.get("chown"), flags.get("chmod"),
             bool(flags.get("link", False)), list(flags.get("exclude", [])), list(inst.heredocs),
             bool(flags.get("parents", False)), flags.get("checksum"), flags.get("unpack"), flags.get("keep-git-dir"))
    if c.checksum is not None or c.keep_git_dir is not None:
        from .remote import is_git  # ADD's machinery (urllib, tarfile, zstandard): not for every COPY
    if c.checksum is not None:
        if not all(s.startswith(("http://", "https://")) or is_git(s) for s in c.sources):
            raise err("ADD --checksum can only be used with HTTP(S) or git sources")
        if "$" not in c.checksum and not re.fullmatch(r"sha256:[0-9a-f]{64}|[0-9a-f]{1,40}", c.checksum):
            raise err(f"invalid --checksum {c.checksum!r}: sha256:<64 hex digits> (a URL) or a commit prefix (git)")
    if c.keep_git_dir is not None and not all(is_git(s) for s in c.sources):
        raise err("ADD --keep-git-dir can only be used with git sources")
    for x in c.excludes:
        if not x.strip():
            raise err(f"{inst.cmd} --exclude needs a pattern")
    return c


def _kv(klass, legacy):
    def build(inst, flags, err, filename):
        return klass(inst, _pairs(inst, filename, legacy))
    return build


def _words(klass, json_ok):
    def build(inst, flags, err, filename):
        words = inst.json_args() if json_ok else None
        if words is None:
            words = inst.args.split()
        if not words:
            raise err(f"{inst.cmd} requires at least one argument")
        return klass(inst, words)
    return build


def _text(klass, what="one argument"):
    def build(inst, flags, err, filename):
        if not inst.args.strip():
            raise err(f"{inst.cmd} requires {what}")
        return klass(inst, inst.args.strip())
    return build


def _cmdlike(klass):
    def build(inst, flags, err, filename):
        exec_form = inst.json_args()
        if exec_form is None and not inst.args.strip():
            raise err(f"{inst.cmd} requires at least one argument")
        return klass(inst, exec_form, inst.args)
    return build


def _shell(inst, flags, err, filename):
    argv = inst.json_args()
    if argv is None:
        raise err("SHELL requires the arguments to be in JSON form")
    if not argv:
        raise err("SHELL requires at least one argument")
    return Shell(inst, argv)


def _healthcheck(inst, flags, err, filename):
    words = inst.args.split(None, 1)
    if not words:
        raise err("HEALTHCHECK requires an argument (CMD or NONE)")
    kind = words[0].upper()
    if kind == "NONE":
        if len(words) > 1 or flags:
            raise err("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(inst, ["NONE"])
    if kind != "CMD":
        raise err(f"unknown type {words[0]!r} in HEALTHCHECK (try CMD)")
    rest = words[1] if len(words) > 1 else ""
    if not rest.strip():
        raise err("HEALTHCHECK CMD requires a command")
    probe = parse_line("CMD " + rest, inst.line)
    argv = probe.json_args()
    test = ["CMD", *argv] if argv is not None else ["CMD-SHELL", rest.strip()]
    h = Healthcheck(inst, test)
    for name, attr in (("interval", "interval"), ("timeout", "timeout"), ("start-period", "start_period"),
                       ("start-interval", "start_interval")):
        if name in flags:
            try:
                value = parse_duration(str(flags[name]))
            except ValueError as e:
                raise err(f"--{name}: {e}") from None
            if 0 < value < 1_000_000:
                raise err(f"--{name} cannot be less than 1ms")
            setattr(h, attr, value)
    if "retries" in flags:
        try:
            h.retries = int(str(flags["retries"]))
        except ValueError:
            raise err(f"--retries: invalid number {flags['retries']!r}") from None
        if h.retries < 0:
            raise err("--retries cannot be negative")
    return h


def _onbuild(inst, flags, err, filename):
    if not inst.args.strip():
        raise err("ONBUILD requires at least one argument")
    inner = parse_line(inst.args, inst.line, filename=filename)
    if inner.cmd == "ONBUILD":
        raise err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if inner.cmd in ("FROM", "MAINTAINER"):
        raise err(f"{inner.cmd} isn't allowed as an ONBUILD trigger")
    trigger = convert(inner, filename)
    return Onbuild(inst, inst.args.strip(), trigger)


_BUILDERS = {
    "FROM": _from,
    "RUN": _run,
    "COPY": _copy,
    "ADD": _copy,
    "ENV": _kv(Env, True),
    "LABEL": _kv(Label, True),
    "ARG": _kv(Arg, False),
    "EXPOSE": _words(Expose, False),
    "VOLUME": _words(Volume, True),
    "WORKDIR": _text(Workdir, "exactly one argument"),
    "USER": _text(User, "exactly one argument"),
    "STOPSIGNAL": _text(StopSignal, "exactly one argument"),
    "MAINTAINER": _text(Maintainer),
    "CMD": _cmdlike(Cmd),
    "ENTRYPOINT": _cmdlike(Entrypoint),
    "SHELL": _shell,
    "HEALTHCHECK": _healthcheck,
    "ONBUILD": _onbuild,
}
