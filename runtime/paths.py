"""Paths inside a container root that cannot lead out of it.

An image is hostile input: `/etc/passwd`, a WORKDIR or a volume target may
be a symlink to `/etc/shadow` or `../../..`. These helpers resolve such
paths the way the kernel would if the root were `/` (absolute links restart
at the root, `..` stops there), so the host path they return is always under
the root. Mount targets are then opened with O_PATH|O_NOFOLLOW and mounted
on through /proc/self/fd, so nothing can swap a component in between.
"""
from __future__ import annotations

import errno
import os
import stat

from storage.errors import PathError
from storage.pathwalk import DirTree, split as _split, walk

from .errors import UnsafePath


def secure_join(root: str, path: str, follow_last: bool = True) -> str:
    """`path` resolved inside `root` (symlinks followed, `..` clamped at root).

    Components that do not exist are kept as `mkdir -p` would make them, so
    the result names where the file would be created."""
    return _resolve(root, path, follow_last)[0]


def _resolve(root: str, path: str, follow_last: bool = True) -> tuple[str, bool, bool]:
    """secure_join's host path, whether it exists, and whether it is a directory."""
    tree = DirTree(root)
    try:
        w = walk(tree, path, follow_last=follow_last)
    except PathError as e:
        raise UnsafePath(str(e)) from None
    if w.notdir:
        raise UnsafePath(f"{path!r}: /{'/'.join(w.parts[:w.exists + 1])} is not a directory")
    return tree.host(w.parts), w.node is not None, w.node is not None and stat.S_ISDIR(w.node.st_mode)


def mkdir_in_root(root: str, path: str, mode: int = 0o755, uid: int = -1, gid: int = -1) -> str:
    """Create directory `path` (and parents) inside `root`; return its host path."""
    host = secure_join(root, path)
    rel = _split(os.path.relpath(host, root)) if host != root.rstrip("/") else []
    cur = root.rstrip("/") or "/"
    for name in rel:
        cur = os.path.join(cur, name)
        try:
            os.mkdir(cur, mode)
            if uid >= 0 or gid >= 0:
                os.lchown(cur, uid, gid)
        except FileExistsError:
            pass
        st = os.lstat(cur)
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{path!r}: {os.path.relpath(cur, root)} is not a directory")
    return host


def ensure_target(root: str, path: str, directory: bool) -> str:
    """Make a mount target inside `root`: a directory, or an empty file."""
    host, exists, is_dir = _resolve(root, path)
    if host == (root.rstrip("/") or "/"):
        return host
    if exists and (is_dir or not directory):
        return host  # what the steps below would find: one walk instead of three (a container's start)
    parent = os.path.dirname(os.path.relpath(host, root))
    mkdir_in_root(root, "/" + parent if parent else "/")
    if directory:
        return mkdir_in_root(root, path)
    try:
        fd = os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        os.close(fd)
    except FileExistsError:
        pass
    return host


def open_inside(root: str, host: str) -> int:
    """An O_PATH descriptor of `host`, checked to still be inside `root` and not a symlink."""
    try:
        fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UnsafePath(f"{host}: {e.strerror}") from None
    real = os.readlink(f"/proc/self/fd/{fd}")
    base = root.rstrip("/")
    if stat.S_ISLNK(os.fstat(fd).st_mode) or not (real == base or real.startswith(base + "/")):
        os.close(fd)
        raise UnsafePath(f"{host}: changed while being resolved")
    return fd


def is_within(root: str, host: str) -> bool:
    base = root.rstrip("/")
    return host == base or host.startswith(base + "/")


def lexical_clean(path: str) -> str:
    """An absolute, normalized container path ('..' cannot climb above '/')."""
    out: list[str] = []
    for c in _split(path):
        if c == "..":
            if out:
                out.pop()
        else:
            out.append(c)
    return "/" + "/".join(out)


def no_such_dir(e: OSError) -> bool:
    return e.errno in (errno.ENOENT, errno.ENOTDIR)
