"""USER / -u resolved through the image's own /etc/passwd and /etc/group.

The rules are runc's (libcontainer GetExecUser), which Docker uses: a name
must exist in the image; a number need not; `user:group` sets the primary
group and then no supplementary groups are added; plain `user` gets every
group that lists the user as a member. Files are read through a callable so
the same code serves a layer view, a mounted root or a test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .errors import UserNotFound

MAX_ID = 2**31 - 1
ReadFile = Callable[[str], "bytes | None"]


@dataclass
class ExecUser:
    """Who the container's process runs as, resolved against the image's /etc/passwd and /etc/group."""
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"
    name: str | None = None


@dataclass
class _Passwd:
    """One /etc/passwd entry."""
    name: str
    uid: int
    gid: int
    home: str


@dataclass
class _Group:
    """One /etc/group entry."""
    name: str
    gid: int
    members: list[str]


def _int(text: str) -> int | None:
    if text.isdigit() and len(text) < 12:
        v = int(text)
        return v if v <= MAX_ID else None
    return None


def parse_passwd(data: bytes | None) -> list[_Passwd]:
    out: list[_Passwd] = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        parts = line.strip().split(":")
        if len(parts) < 7 or line.startswith("#"):
            continue
        uid, gid = _int(parts[2]), _int(parts[3])
        if uid is None or gid is None:
            continue
        out.append(_Passwd(parts[0], uid, gid, parts[5]))
    return out


def parse_group(data: bytes | None) -> list[_Group]:
    out: list[_Group] = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        parts = line.strip().split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        gid = _int(parts[2])
        if gid is None:
            continue
        out.append(_Group(parts[0], gid, [m for m in parts[3].split(",") if m]))
    return out


def resolve(spec: str | None, read_file: ReadFile) -> ExecUser:
    """`spec` is `user`, `uid`, `user:group`, `uid:gid` (or empty: root)."""
    spec = (spec or "").strip()
    user_part, _, group_part = spec.partition(":")
    if not user_part:
        user_part = "0"
    passwd = parse_passwd(read_file("/etc/passwd"))
    uid_num = _int(user_part)
    # A name wins over a uid that happens to look the same, as in runc.
    entry = next((p for p in passwd if p.name == user_part), None) or \
        next((p for p in passwd if uid_num is not None and p.uid == uid_num), None)
    if entry is None:
        if uid_num is None:
            raise UserNotFound(f"unable to find user {user_part}: no matching entries in passwd file")
        out = ExecUser(uid=uid_num, gid=0, home="/")
    else:
        out = ExecUser(uid=entry.uid, gid=entry.gid, home=entry.home or "/", name=entry.name)
    if group_part or spec.endswith(":"):
        if not group_part:
            raise UserNotFound(f"invalid user spec {spec!r}: empty group")
        groups = parse_group(read_file("/etc/group"))
        gid_num = _int(group_part)
        g = next((g for g in groups if g.name == group_part), None) or \
            next((g for g in groups if gid_num is not None and g.gid == gid_num), None)
        if g is None:
            if gid_num is None:
                raise UserNotFound(f"unable to find group {group_part}: no matching entries in group file")
            out.gid = gid_num
        else:
            out.gid = g.gid
        return out
    if out.name is not None:
        groups = parse_group(read_file("/etc/group"))
        seen: list[int] = []
        for g in groups:
            if out.name in g.members and g.gid not in seen:
                seen.append(g.gid)
        out.additional_gids = seen
    return out
