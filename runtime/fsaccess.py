"""Files of a container, from outside: stat, a tar of a path, a tar extracted into it (`cp`).

The work happens in a forked process that is inside the container's root:
joined to a running container's mount namespace, or, for a stopped one,
in a private mount namespace with its snapshot mounted and chrooted into
(the container is locked meanwhile, so it cannot start on the same upper
directory). Paths and symlinks therefore resolve exactly as the container
sees them, and a hostile symlink in the container cannot lead out of it.
Tar streams pass through a pipe.
"""
from __future__ import annotations

import json
import os
import tarfile
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from . import nsenter
from .containers import LIVE
from .errors import ContainerError, ContainerState

if TYPE_CHECKING:
    from .container import Container


def whole_seconds(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Integral mtimes: a PAX header per file for sub-second times is noise to `tar` readers."""
    member.mtime = int(member.mtime)
    return member


@contextmanager
def inside(c: "Container") -> Iterator[Callable[[], None]]:
    """An `enter()` for nsenter.start_inside that puts the caller into `c`'s root."""
    st = c.refresh()
    if st.status in LIVE and st.pid:
        pid = st.pid
        yield lambda: nsenter.join(pid, only=("mnt",), with_cgroups=False)
        return
    if not c.cdir.try_lock():
        raise ContainerState(f"container {c.name} is starting or stopping; try again")
    try:
        from . import snapshotter
        from .launch import shared_dir
        from pathlib import Path

        launch = c.launch
        snap = snapshotter.get("copy" if launch.snapshotter == "copy" else "overlay")
        mounts = snap.prepare(launch.active)
        target = str(shared_dir(Path(launch.base), "rootfs"))
        yield lambda: nsenter.in_root(mounts, target, launch.base)
    finally:
        c.cdir.unlock()


def _run(c: "Container", fn: Callable[[], None], stream: Callable[[], None] | None = None) -> None:
    with inside(c) as enter:
        pid, err = nsenter.start_inside(enter, fn)
        try:
            if stream is not None:
                stream()
        finally:
            msg = nsenter.finish_inside(pid, err)
    if msg:
        raise ContainerError(msg)


def stat(c: "Container", path: str) -> dict | None:
    """{"name", "mode", "dir", "link"} of `path` in the container (symlinks followed), or None."""
    r, w = os.pipe2(os.O_CLOEXEC)

    def fn() -> None:
        try:
            st = os.stat(path)
            info = {"name": os.path.basename(path.rstrip("/")) or "/", "mode": st.st_mode,
                    "dir": os.path.isdir(path), "link": os.readlink(path) if os.path.islink(path) else ""}
        except FileNotFoundError:
            info = None
        except NotADirectoryError:
            info = None
        os.write(w, json.dumps(info).encode())

    out = []

    def read() -> None:
        from .waiting import read_all

        os.close(w)
        out.append(read_all(r))

    try:
        _run(c, fn, read)
    finally:
        os.close(r)
    return json.loads(b"".join(out) or b"null")


@contextmanager
def reading(c: "Container", path: str, arcname: str, follow: bool = False) -> Iterator[BinaryIO]:
    """A tar stream of `path` in the container (its top entry named `arcname`), to read from."""
    r, w = os.pipe2(os.O_CLOEXEC)

    def fn() -> None:
        os.close(r)
        src = os.path.realpath(path) if follow else path
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=arcname, recursive=True, filter=whole_seconds)

    with _started(c, fn) as done:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            yield f
            while f.read(1 << 16):  # let the writer finish whatever the reader left
                pass
        done()


@contextmanager
def writing(c: "Container", dest_dir: str, keep_owner: bool = False) -> Iterator[BinaryIO]:
    """A stream to write a tar into, unpacked into `dest_dir` in the container; what it
    unpacks belongs to the container's root unless `keep_owner` (cp -a)."""
    r, w = os.pipe2(os.O_CLOEXEC)

    def owner(member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo:
        if keep_owner:
            return member
        return member.replace(uid=0, gid=0, uname="", gname="", deep=False)

    def fn() -> None:
        os.close(w)
        if not os.path.isdir(dest_dir):
            raise ContainerError(f"destination {dest_dir!r} is not a directory in the container")
        with os.fdopen(r, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            tar.extractall(dest_dir, numeric_owner=True, filter=owner)

    with _started(c, fn) as done:
        os.close(r)
        try:
            with os.fdopen(w, "wb") as f:
                yield f
        except BrokenPipeError:
            pass
        done()


@contextmanager
def _started(c: "Container", fn: Callable[[], None]) -> Iterator[Callable[[], None]]:
    """The child running `fn` inside `c`; the yielded `done()` waits for it and raises its error."""
    with inside(c) as enter:
        pid, err = nsenter.start_inside(enter, fn)
        finished = []

        def done() -> None:
            finished.append(True)
            msg = nsenter.finish_inside(pid, err)
            if msg:
                raise ContainerError(msg)
        try:
            yield done
        finally:
            if not finished:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
                nsenter.finish_inside(pid, err)
