"""Writing a file the user named (`save -o`, `build --output`, `copy ...-archive:`).

A regular file, or a name not there yet, is replaced whole or not at all:
the bytes go to a temporary file created beside it under an unpredictable
name with O_EXCL|O_NOFOLLOW (nothing another user planted in a shared
directory is opened or followed), are fsynced and renamed over the name. On
failure the temporary file is removed and the old file is as it was.

Anything else is written straight through and never replaced: a device
(`/dev/null`), a FIFO, a terminal, or a symlink to one (`/dev/stdout`). A
symlink to a regular file is followed as the shell's `>` would, and the
file it names is replaced as above. A symlink, FIFO or device that another
user left in a sticky world-writable directory (/tmp) is refused, as the
kernel's fs.protected_symlinks and protected_fifos would (soko does not rely
on those being switched on).
"""
from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .blobs import _fsync_dir
from .errors import StorageError

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def open_output(dest: str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    """A binary file to write `dest` through; committed when the block ends
    without an exception. A file object (stdout) is written as it is."""
    if hasattr(dest, "write"):
        yield dest  # type: ignore[misc]
        dest.flush()  # type: ignore[union-attr]
        return
    path = Path(dest)  # type: ignore[arg-type]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{path}: is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _refuse_planted(path, st)
        # a symlink, device or FIFO: open it as `> path` would (a FIFO waits for its reader)
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        target = os.fstat(fd)
        real = Path(os.path.realpath(path))
        if stat.S_ISREG(target.st_mode) and _same_file(real, target):
            os.close(fd)
            path, st = real, target  # a symlink to a regular file: replace that file
        else:
            if stat.S_ISREG(target.st_mode):
                os.ftruncate(fd, 0)  # a file with no name to replace (deleted, or /proc magic)
            with os.fdopen(fd, "wb") as f:
                yield f
            return
    with _replacing(path, st) as f:
        yield f


def _refuse_planted(path: Path, st: os.stat_result) -> None:
    parent = os.stat(path.parent)
    shared = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
    if shared and st.st_uid not in (os.geteuid(), parent.st_uid):
        raise StorageError(f"{path}: refusing to write through a {_kind(st)} that another user "
                           f"(uid {st.st_uid}) left in a shared directory")


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "FIFO" if stat.S_ISFIFO(st.st_mode) else "device or special file"


def _same_file(p: Path, st: os.stat_result) -> bool:
    try:
        other = os.stat(p)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


@contextmanager
def _replacing(path: Path, old: os.stat_result | None) -> Iterator[BinaryIO]:
    directory = path.parent
    mode = stat.S_IMODE(old.st_mode) & 0o777 if old is not None else 0o666  # new files: the umask decides
    for _ in range(16):
        tmp = directory / f".{path.name[:200]}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, _TEMP_FLAGS, mode)
            break
        except FileExistsError:
            continue  # planted, or a collision: never reuse a name someone else made
    else:
        raise StorageError(f"{path}: cannot create a temporary file beside it")
    try:
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                os.fchmod(fd, mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
