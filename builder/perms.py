"""`--chown` and `--chmod` values, and user names looked up in the image itself.

--chown follows BuildKit: a number needs no lookup and also stands for the
group when none is given; a name is looked up in the image's /etc/passwd
(and its primary group becomes the group unless one is given); a group name
is looked up in the image's /etc/group. A name that is not there fails the
step. --chmod takes octal (`755`) or chmod(1)'s symbolic form (`u=rwX,go=rX`).
"""
from __future__ import annotations

import re
from typing import Callable

from .errors import BuildError, StepError

ReadFile = Callable[[str], "bytes | None"]
MAX_ID = 2**31 - 1


def _table(data: bytes | None) -> list[list[str]]:
    rows = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        rows.append(line.split(":"))
    return rows


def _number(text: str) -> int | None:
    if text.isdigit() and len(text) <= 10:
        value = int(text)
        if value <= MAX_ID:
            return value
    return None


def resolve_owner(view, spec: str, cmd, filename: str) -> tuple[int, int]:
    """`resolve_chown` through an image's files, failing the step at `cmd`'s line."""
    try:
        return resolve_chown(spec, view.read_file)
    except BuildError as e:
        raise StepError(str(e), cmd.line, filename) from None


def resolve_chown(spec: str, read_file: ReadFile) -> tuple[int, int]:
    """(uid, gid) for a `user[:group]` spec, names resolved through `read_file`."""
    user, colon, group = spec.partition(":")
    if not user:
        raise BuildError(f"invalid --chown {spec!r}: no user")
    uid = _number(user)
    gid: int | None = None
    if uid is None:
        for row in _table(read_file("/etc/passwd")):
            if len(row) >= 4 and row[0] == user:
                uid, gid = _number(row[2]), _number(row[3])
                break
        if uid is None:
            raise BuildError(f"unable to find user {user}: no matching entries in passwd file")
    else:
        gid = uid
    if colon and not group:
        gid = 0  # `user:` names an empty group: BuildKit takes that as group 0
    elif group:
        gid = _number(group)
        if gid is None:
            for row in _table(read_file("/etc/group")):
                if len(row) >= 3 and row[0] == group:
                    gid = _number(row[2])
                    break
            if gid is None:
                raise BuildError(f"unable to find group {group}: no matching entries in group file")
    return uid, gid if gid is not None else uid


_SYMBOLIC = re.compile(r"^([ugoa]*)([+=-])([rwxXst]*|[ugo])$")


class Chmod:
    """A parsed --chmod: octal replaces the permission bits, symbolic edits them."""

    def __init__(self, spec: str):
        self.spec = spec
        self.octal: int | None = None
        self.clauses: list[tuple[str, str, str]] = []
        if re.fullmatch(r"[0-7]{1,4}", spec):
            self.octal = int(spec, 8)
            return
        for clause in spec.split(","):
            m = _SYMBOLIC.match(clause)
            if not m:
                raise BuildError(f"invalid --chmod {spec!r}: octal (755) or symbolic (u=rwX,go=rX)")
            self.clauses.append((m.group(1) or "a", m.group(2), m.group(3)))

    def apply(self, mode: int, is_dir: bool) -> int:
        if self.octal is not None:
            return self.octal
        for who, op, perms in self.clauses:
            if "a" in who:
                who = "ugo"
            mask = 0
            if perms in ("u", "g", "o"):
                shift = {"u": 6, "g": 3, "o": 0}[perms]
                bits = (mode >> shift) & 7
                for w in who:
                    mask |= bits << {"u": 6, "g": 3, "o": 0}[w]
            else:
                for w in who:
                    shift = {"u": 6, "g": 3, "o": 0}[w]
                    for p in perms:
                        if p == "r":
                            mask |= 4 << shift
                        elif p == "w":
                            mask |= 2 << shift
                        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                            mask |= 1 << shift
                        elif p == "s" and w in "ug":
                            mask |= 0o4000 if w == "u" else 0o2000
                        elif p == "t":
                            mask |= 0o1000
            if op == "+":
                mode |= mask
            elif op == "-":
                mode &= ~mask
            else:
                clear = 0
                for w in who:
                    shift = {"u": 6, "g": 3, "o": 0}[w]
                    clear |= 7 << shift
                    clear |= {"u": 0o4000, "g": 0o2000, "o": 0o1000}[w]
                mode = (mode & ~clear) | mask
        return mode & 0o7777
