"""`RUN --mount=...` as BuildKit spells it: parsed and checked before anything runs.

`parse_mount` reads the CSV field list (`type=cache,target=/root/.cache,sharing=locked`),
rejects unknown types, options that the type does not take, and bad values
(values holding `$` are checked again after expansion, at the step). `resolve`
expands variables, makes the target absolute against WORKDIR and fills in
BuildKit's defaults:

| type | options | defaults |
|---|---|---|
| bind | target, source, from, ro/readonly, rw/readwrite | read-only, source `/` of the context |
| cache | target, id, sharing, from, source, mode, uid, gid, ro/readonly | id = target, shared, 0755 0:0 |
| tmpfs | target, size | no limit |
| secret | id, target, env, required, mode, uid, gid | id = basename(target), target /run/secrets/ID unless env, 0400 0:0 |
| ssh | id, target, required, mode, uid, gid | id `default`, target /run/buildkit/ssh_agent.N, 0600 0:0 |

`target`, `dst` and `destination` are one option, as are `source`/`src`.
"""
from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable

TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_ALIASES = {"dst": "target", "destination": "target", "src": "source", "readonly": "ro", "readwrite": "rw"}
_BOOLS = {"ro", "rw", "required"}
ALLOWED = {
    "bind": {"target", "source", "from", "ro", "rw"},
    "cache": {"target", "id", "sharing", "from", "source", "mode", "uid", "gid", "ro"},
    "tmpfs": {"target", "size"},
    "secret": {"id", "target", "env", "required", "mode", "uid", "gid"},
    "ssh": {"id", "target", "required", "mode", "uid", "gid"},
}
KNOWN = set().union(*ALLOWED.values())
SHARING = ("shared", "private", "locked")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)$", re.I)


@dataclass
class MountSpec:
    """One --mount as written: its type and options (canonical names, values unexpanded)."""
    type: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def resolve(self, expand: Callable[[str], str], workdir: str, index: int) -> "Mount":
        """The mount with variables expanded, defaults filled in and values checked (ValueError)."""
        opts = {k: expand(v) for k, v in self.options.items()}
        return _typed(self.type, opts, workdir, index)


@dataclass
class Mount:
    """One --mount resolved for a step: its options expanded and checked."""
    type: str
    target: str | None             # absolute; None for a secret given only as env
    source: str = ""               # bind/cache: the path in `from` ("" = its root)
    from_: str | None = None       # bind/cache: a stage or image; None = the context (bind), empty (cache)
    readonly: bool = False
    id: str = ""                   # cache, secret, ssh
    sharing: str = "shared"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    size: int | None = None        # tmpfs, bytes
    env: str | None = None         # secret
    required: bool = False

    def key(self) -> dict:
        """What the step's cache key holds of this mount (never a secret's value)."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", False)}


def parse_mount(text: str) -> MountSpec:
    """A --mount value -> MountSpec; ValueError with the reason when it is malformed."""
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as e:
        raise ValueError(str(e)) from None
    opts: dict[str, str] = {}
    kind = "bind"
    for f in fields:
        f = f.strip()
        if not f:
            continue
        key, eq, value = f.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if key == "type":
            kind = value.strip().lower()
            if kind not in TYPES:
                raise ValueError(f"unsupported mount type {value!r} (bind, cache, tmpfs, secret or ssh)")
            continue
        if not eq:
            if key not in _BOOLS:
                raise ValueError(f"option {key!r} needs a value ({key}=...)")
            value = "true"
        if key in opts or (key in ("ro", "rw") and ({"ro", "rw"} & set(opts))):
            raise ValueError(f"option {key!r} given twice")
        opts[key] = value
    allowed = ALLOWED[kind]
    for key in opts:
        if key not in KNOWN:
            raise ValueError(f"unknown option {key!r}")
        if key not in allowed:
            raise ValueError(f"option {key!r} does not apply to type={kind}")
    spec = MountSpec(kind, opts, text)
    if not any("$" in v for v in opts.values()):
        spec.resolve(lambda v: v, "/", 0)  # values are checked now, before anything runs
    return spec


def _bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError(f"{key}={value}: expected true or false")


def _int(key: str, value: str, base: int = 10, limit: int = 2**31 - 1) -> int:
    try:
        n = int(value, base)
    except ValueError:
        raise ValueError(f"{key}={value}: not a{'n octal' if base == 8 else ''} number") from None
    if not 0 <= n <= limit:
        raise ValueError(f"{key}={value}: out of range")
    return n


def parse_size(value: str) -> int:
    """go-units RAMInBytes: `64m`, `1g`, `512k`, `1024` (binary units)."""
    m = _SIZE.match(value.strip())
    if not m:
        raise ValueError(f"size={value}: not a size (e.g. 64m)")
    scale = 1024 ** "bkmgtp".index(m.group(2).lower() or "b")
    return int(float(m.group(1)) * scale)


def _typed(kind: str, o: dict[str, str], workdir: str, index: int) -> Mount:
    target = o.get("target")
    if target is not None:
        if not target:
            raise ValueError("target= is empty")
        target = posixpath.normpath(posixpath.join("/", workdir, target))
    m = Mount(kind, target)
    if "ro" in o:
        m.readonly = _bool("ro", o["ro"])
    if "rw" in o:
        m.readonly = not _bool("rw", o["rw"])
    elif kind == "bind" and "ro" not in o:
        m.readonly = True  # BuildKit: bind mounts are read-only unless rw
    m.source = o.get("source", "")
    m.from_ = o.get("from") or None
    m.id = o.get("id", "")
    if "uid" in o:
        m.uid = _int("uid", o["uid"])
    if "gid" in o:
        m.gid = _int("gid", o["gid"])
    if "mode" in o:
        m.mode = _int("mode", o["mode"], 8, 0o7777)
    if "required" in o:
        m.required = _bool("required", o["required"])
    if "sharing" in o:
        m.sharing = o["sharing"].lower()
        if m.sharing not in SHARING:
            raise ValueError(f"sharing={o['sharing']}: expected shared, private or locked")
    if "size" in o:
        m.size = parse_size(o["size"])
    if kind in ("bind", "cache", "tmpfs") and target is None:
        raise ValueError(f"type={kind} needs a target")
    if kind == "cache":
        m.id = m.id or target  # type: ignore[assignment]
        m.mode = 0o755 if m.mode is None else m.mode
    elif kind == "secret":
        m.env = o.get("env") or None
        if m.env is not None and not _ENV_NAME.match(m.env):
            raise ValueError(f"env={m.env}: not a variable name")
        if not m.id:
            if target is None:
                raise ValueError("a secret needs id= (or a target to take it from)")
            m.id = posixpath.basename(target)
        if target is None and m.env is None:
            m.target = f"/run/secrets/{m.id}"
        m.mode = 0o400 if m.mode is None else m.mode
    elif kind == "ssh":
        m.id = m.id or "default"
        m.target = target or f"/run/buildkit/ssh_agent.{index}"
        m.mode = 0o600 if m.mode is None else m.mode
    if m.target == "/":
        raise ValueError("cannot mount on /")
    return m
