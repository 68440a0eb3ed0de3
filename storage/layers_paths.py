"""Resolving layer entry paths inside a root directory without ever leaving it.

Every operation of the applier works on (directory fd, single name) pairs:
the directory is reached from the root fd one component at a time with
O_NOFOLLOW, and the final name is never followed. The walk itself is
pathwalk.walk over this tree of directory fds, with `..` above the root
refused (a symlink met on the way, a lower layer's `bin -> usr/bin` or a
hostile `x -> /`, resolves as the container will see it, with the root as
`/`; one that climbs above the root has no use but escaping) and missing
directories made on the way (0755), as Docker and containerd do.
"""
from __future__ import annotations

import errno
import os
import stat

from .errors import LayerError, PathEscape, SymlinkLoop, UnsafePathError
from .pathwalk import REFUSE, Parts, walk

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_CACHED = 256


def split_entry(name: str) -> Parts:
    """Components of a tar entry name relative to the root: leading `/` and
    `.` dropped (as Docker does), `..` refused."""
    parts = tuple([p for p in name.split("/") if p and p != "."])
    if ".." in parts or "\0" in name:
        raise UnsafePathError(f"layer entry {name!r} points outside the target")
    return parts


class Resolver:
    """Directory fds inside one root, cached by path; `invalidate` after
    anything that could change what a cached path refers to. Also the tree
    (lstat, readlink, mkdir at a real path) that pathwalk.walk resolves in."""

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self._resolved: dict[Parts, tuple[Parts, int]] = {}  # as named -> (real path, symlinks followed)
        self._fds: dict[Parts, int] = {(): root_fd}
        self._gids: dict[Parts, int] = {}
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
        self._gids = {}

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
        found = self._dir(parts, entry, create)
        return None if found is None else (self._fd(found[0]), found[0])

    def _dir(self, parts: Parts, entry: str, create: bool) -> tuple[Parts, int] | None:
        """(real path, symlinks followed to reach it), through the cache of each prefix."""
        if not parts:
            return (), 0
        hit = self._resolved.get(parts)
        if hit is not None:
            return hit
        parent = self._dir(parts[:-1], entry, create)
        if parent is None:
            return None
        try:
            w = walk(self, parts[-1:], dotdot=REFUSE, start=parent[0], links=parent[1], create=create)
        except SymlinkLoop:
            raise LayerError(f"layer entry {entry!r}: too many levels of symlinks") from None
        except PathEscape as e:
            raise UnsafePathError(f"layer entry {entry!r} goes through a symlink to {e.target!r} "
                                  "that leads outside the target") from None
        if w.notdir or (w.node is not None and not stat.S_ISDIR(w.node.st_mode)):
            raise LayerError(f"layer entry {entry!r}: {'/'.join(parts)} is not a directory")
        if w.node is None:
            return None
        self._resolved[parts] = (w.parts, w.links)
        return w.parts, w.links

    def gid(self, real: Parts) -> int:
        """The group of real directory `real` (which new files in it may inherit)."""
        gid = self._gids.get(real)
        if gid is None:
            gid = self._gids[real] = os.fstat(self._fd(real)).st_gid
        return gid

    def _fd(self, real: Parts) -> int:
        """An fd of real directory `real`, opened component by component without following."""
        fd = self._fds.get(real)
        if fd is None:
            fd = os.open(real[-1], _O_DIR, dir_fd=self._fd(real[:-1]))
            self._fds[real] = fd
        return fd

    # -- the tree pathwalk.walk resolves in -------------------------------------------
    def lstat(self, parts: Parts) -> os.stat_result | None:
        if not parts:
            return os.fstat(self.root_fd)
        try:
            return os.stat(parts[-1], dir_fd=self._fd(parts[:-1]), follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENAMETOOLONG):
                return None  # no such entry can exist there
            raise

    def readlink(self, parts: Parts, node: os.stat_result) -> str:
        return os.readlink(parts[-1], dir_fd=self._fd(parts[:-1]))

    def mkdir(self, parts: Parts) -> os.stat_result:
        pfd = self._fd(parts[:-1])
        os.mkdir(parts[-1], 0o755, dir_fd=pfd)
        return os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
