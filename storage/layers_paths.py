"""Resolving layer entry paths inside a root directory without ever leaving it.

Every operation of the applier works on (directory fd, single name) pairs:
the directory is reached by walking from the root fd one component at a
time with O_NOFOLLOW, and the final name is never followed. A symlink met
on the way (a lower layer's `bin -> usr/bin`, or a hostile `x -> /`) is
resolved as the container will see it, with the root as `/`; a relative
target that climbs above the root is refused (UnsafePathError), since no
image relies on that and escaping is its only use.
"""
from __future__ import annotations

import os
import stat

from .errors import LayerError, UnsafePathError

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 40
MAX_CACHED = 256

Parts = tuple[str, ...]


def split_entry(name: str) -> Parts:
    """Components of a tar entry name relative to the root: leading `/` and
    `.` dropped (as Docker does), `..` refused."""
    parts = tuple(p for p in name.split("/") if p and p != ".")
    if ".." in parts or any("\0" in p for p in parts):
        raise UnsafePathError(f"layer entry {name!r} points outside the target")
    return parts


def join_link(base: Parts, target: str, entry: str) -> Parts:
    """Where symlink `target`, found in directory `base`, leads (root = `/`)."""
    parts = [] if target.startswith("/") else list(base)
    for p in target.split("/"):
        if not p or p == ".":
            continue
        if p == "..":
            if not parts:
                raise UnsafePathError(
                    f"layer entry {entry!r} goes through a symlink to {target!r} "
                    "that leads outside the target")
            parts.pop()
        else:
            parts.append(p)
    return tuple(parts)


class Resolver:
    """Directory fds inside one root, cached by path; `invalidate` after
    anything that could change what a cached path refers to."""

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self._resolved: dict[Parts, Parts] = {}   # as named -> real path (no symlinks)
        self._fds: dict[Parts, int] = {(): root_fd}
        self._stale: list[int] = []

    def close(self) -> None:
        self.invalidate()
        self._close_stale()

    def invalidate(self) -> None:
        """Forget every cached directory. Their fds stay open until `trim`,
        because the caller may still be using one (a parent it got earlier)."""
        self._stale.extend(fd for parts, fd in self._fds.items() if parts)
        self._fds = {(): self.root_fd}
        self._resolved = {}

    def _close_stale(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale = []

    def trim(self) -> None:
        """Called between entries, when no fd handed out is in use any more."""
        self._close_stale()
        if len(self._fds) > MAX_CACHED:
            self.invalidate()
            self._close_stale()

    def dir(self, parts: Parts, entry: str, create: bool = True) -> tuple[int, Parts] | None:
        """(fd, real path) of directory `parts`; missing components are
        created (mode 0755) when `create`, else None is returned."""
        return self._dir(parts, entry, create, 0)

    def _dir(self, parts: Parts, entry: str, create: bool, hops: int) -> tuple[int, Parts] | None:
        real = self._resolved.get(parts)
        if real is not None:
            return self._fds[real], real
        if not parts:
            return self.root_fd, ()
        parent = self._dir(parts[:-1], entry, create, hops)
        if parent is None:
            return None
        pfd, preal = parent
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o755, dir_fd=pfd)
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            if hops >= MAX_LINK_HOPS:
                raise LayerError(f"layer entry {entry!r}: too many levels of symlinks")
            target = os.readlink(name, dir_fd=pfd)
            found = self._dir(join_link(preal, target, entry), entry, create, hops + 1)
            if found is None:
                return None
            self._resolved[parts] = found[1]
            return found
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer entry {entry!r}: {'/'.join(parts)} is not a directory")
        real = preal + (name,)
        fd = self._fds.get(real)
        if fd is None:
            fd = os.open(name, _O_DIR, dir_fd=pfd)
            self._fds[real] = fd
        self._resolved[parts] = real
        return fd, real
