"""Copy file trees with everything a root filesystem needs kept.

Owners, modes, times, xattrs, symlinks, hardlinks, device nodes and fifos
survive. With `layer=True` the source is a snapshot in overlayfs form and is
applied onto the destination: whiteouts delete, opaque directories replace.
Used for seeding named volumes and by the copy snapshotter (no overlayfs).
"""
from __future__ import annotations

import os
import shutil
import stat

from .layerview import OPAQUE_XATTR, is_opaque, is_whiteout


def _xattrs(src: str, dst: str, skip_opaque: bool) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for n in names:
        if skip_opaque and n == OPAQUE_XATTR:
            continue
        try:
            os.setxattr(dst, n, os.getxattr(src, n, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass


def _meta(src: str, dst: str, st: os.stat_result, skip_opaque: bool = False) -> None:
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _xattrs(src, dst, skip_opaque)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def copy_entry(src: str, dst: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> None:
    """Copy one non-directory entry (dst must not exist)."""
    mode = st.st_mode
    if st.st_nlink > 1 and not stat.S_ISDIR(mode):
        key = (st.st_dev, st.st_ino)
        if key in links:
            os.link(links[key], dst, follow_symlinks=False)
            return
        links[key] = dst
    if stat.S_ISREG(mode):
        with open(src, "rb") as fi, open(dst, "xb") as fo:
            try:
                while os.copy_file_range(fi.fileno(), fo.fileno(), 1 << 30):
                    pass
            except OSError:
                fo.seek(0)
                fo.truncate()
                fi.seek(0)
                shutil.copyfileobj(fi, fo, 1 << 20)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.mknod(dst, mode, st.st_rdev)
    else:
        return
    _meta(src, dst, st)


def copy_tree(src: str, dst: str, layer: bool = False) -> None:
    """Copy the contents of directory `src` into directory `dst` (merged)."""
    links: dict[tuple[int, int], str] = {}
    _copy_dir(src, dst, layer, links)


def _copy_dir(src: str, dst: str, layer: bool, links: dict) -> None:
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        s = e.path
        d = os.path.join(dst, e.name)
        st = os.lstat(s)
        if layer and is_whiteout(st):
            _remove(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                dst_st = os.lstat(d)
            except FileNotFoundError:
                dst_st = None
            if dst_st is not None and (not stat.S_ISDIR(dst_st.st_mode) or (layer and is_opaque(s))):
                _remove(d)
                dst_st = None
            if dst_st is None:
                os.mkdir(d, 0o700)
            _copy_dir(s, d, layer, links)
            _meta(s, d, st, skip_opaque=layer)
        else:
            if layer:
                _remove(d)
            copy_entry(s, d, st, links)
