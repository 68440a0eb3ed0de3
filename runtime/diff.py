"""What a copy-snapshotter container changed, written as an overlay upper dir.

With overlayfs the kernel records a container's changes in the upper
directory. The copy fallback runs on a full copy instead, so afterwards this
walk compares that copy with the layers beneath and writes the same form:
changed and new entries copied, deleted ones as 0/0 character devices. Like
Docker's naive differ, a regular file counts as unchanged when type, mode,
owner, size and mtime all match.
"""
from __future__ import annotations

import os
import stat

from .copy import _meta, copy_entry, copy_tree
from .layerview import Entry, LayerView


def _same(a: os.stat_result, b: os.stat_result, pa: str, pb: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}
    except OSError:
        return {}


def overlay_diff(lower: LayerView, merged: str, upper: str) -> None:
    links: dict = {}
    _walk(lower, merged, upper, "", links)


def _ensure_dir(merged: str, upper: str, rel: str) -> None:
    """Create `rel` and its parents in upper, with the merged tree's metadata."""
    parts = [p for p in rel.split("/") if p]
    cur = ""
    for p in parts:
        cur = os.path.join(cur, p)
        u = os.path.join(upper, cur)
        if not os.path.lexists(u):
            os.mkdir(u, 0o700)
            m = os.path.join(merged, cur)
            _meta(m, u, os.lstat(m))


def _walk(lower: LayerView, merged: str, upper: str, rel: str, links: dict) -> None:
    mdir = os.path.join(merged, rel)
    below = lower.listdir(rel)
    with os.scandir(mdir) as it:
        names = sorted(e.name for e in it)
    for n in names:
        r = os.path.join(rel, n)
        m = os.path.join(merged, r)
        st = os.lstat(m)
        old: Entry | None = below.get(n)
        if old is not None and stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(old.st.st_mode):
            if not _same(st, old.st, m, old.host_path) or _xattrs(m) != _xattrs(old.host_path):
                _ensure_dir(merged, upper, r)
            _walk(lower, merged, upper, r, links)
            continue
        if old is not None and _same(st, old.st, m, old.host_path) and _xattrs(m) == _xattrs(old.host_path):
            continue
        _ensure_dir(merged, upper, rel)
        u = os.path.join(upper, r)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(u, 0o700)
            copy_tree(m, u)
            _meta(m, u, st)
        else:
            copy_entry(m, u, st, links)
    for n in sorted(set(below) - set(names)):
        _ensure_dir(merged, upper, rel)
        os.mknod(os.path.join(upper, rel, n), stat.S_IFCHR | 0o000, 0)
    # a directory's own metadata is set after its children so mtimes stick
    if rel and os.path.isdir(os.path.join(upper, rel)):
        m = os.path.join(merged, rel)
        _meta(m, os.path.join(upper, rel), os.lstat(m))
