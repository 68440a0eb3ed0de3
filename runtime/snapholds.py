"""Who is using a snapshot, across processes: a flock on the snapshot's own directory.

A snapshot may be changed (Snapshots.take: a COPY run again makes its previous
result into the new one) or deleted (`soko gc`) only while nobody uses it, and
users are in other processes too: a concurrent build with it as a RUN's
overlay lower directory, reading it through a view, or hard-linking from it;
`soko create` until the container's state records it. Each holds a shared
flock on the directory for as long as it uses it (`hold`); whoever would
change or delete it gets an exclusive one without waiting (`exclusive`), and
leaves the snapshot alone when it cannot.

The lock is on the directory's inode, so it moves with the directory: after
its lock, a holder checks that the path still names the directory it locked
(a take or a removal that won meanwhile renamed it away; the path is then
empty, or a new unpacking of the layer). One descriptor per snapshot per
process, counted; close-on-exec, so containers and forked monitors do not
keep it (monitor_spawn). flock, not fcntl locks: two descriptors of one
process conflict too, so a build's own holds stop its own takes.
"""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from typing import Iterator

_held: dict[str, list[int]] = {}  # snapshot path -> [holders in this process, descriptor with the shared lock]
_holding: list[list[str]] = []  # what each open `holding()` has held
_lock = threading.Lock()  # a build's stages prepare side by side


@contextmanager
def holding():
    """What `hold` takes within is held until the block ends (a build: its views, its RUN steps'
    lower directories and its COPY steps' donors are done with then; `soko create`: the state
    records the container's layers then); outside any block, for the process's life."""
    mine: list[str] = []
    _holding.append(mine)
    try:
        yield
    finally:
        with _lock:
            _holding.remove(mine)
            for path in mine:
                h = _held[path]
                h[0] -= 1
                if not h[0]:
                    del _held[path]
                    os.close(h[1])


def hold(path: str) -> bool:
    """Hold the snapshot at `path` shared (see `holding` for how long); False when there is none
    (never was, or taken or removed meanwhile: the caller unpacks it again). Waits only for a
    take or a removal that has begun (a rename)."""
    with _lock:
        if _count(path):
            return True
    fd = _locked(path, fcntl.LOCK_SH)
    if fd is None:
        return False
    with _lock:
        if _count(path):  # another thread of this process held it meanwhile
            os.close(fd)
        else:
            _held[path] = [1, fd]
            if _holding:
                _holding[-1].append(path)
    return True


def _count(path: str) -> bool:
    """One more holder of `path` when this process holds it already (under _lock)."""
    h = _held.get(path)
    if h is None:
        return False
    h[0] += 1
    if _holding:
        _holding[-1].append(path)
    return True


@contextmanager
def exclusive(path: str) -> Iterator[bool]:
    """Within: True when the snapshot at `path` is there and nobody holds it, nor can until the
    block ends (then rename it away in the block); False when it is in use or gone."""
    fd = _locked(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _locked(path: str, how: int) -> int | None:
    """A descriptor of the directory at `path`, locked `how` and still what `path` names;
    None when nothing is there (or, LOCK_NB, it is locked)."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, how)
            st = os.fstat(fd)
            now = os.stat(path)
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                return fd
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            if how & fcntl.LOCK_NB:
                return None
            continue
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # renamed away and replaced meanwhile: lock what is there now
