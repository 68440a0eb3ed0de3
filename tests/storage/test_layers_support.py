"""Helpers shared by the layer tests (no tests here): tree snapshots, tar
reading, overlay mounts (tests/tarballs.py builds tars)."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from contextlib import contextmanager
from pathlib import Path

from storage import compression as comp


def snapshot(root: Path, mtimes: bool = True) -> dict[str, tuple]:
    """Everything observable about a tree: type, mode, owner, content,
    link targets, device numbers, xattrs, (mtimes of non-directories)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                with open(p, "rb") as f:
                    what = ("file", hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISLNK(mode):
                what = ("link", os.readlink(p))
            elif stat.S_ISDIR(mode):
                what = ("dir",)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                what = ("dev", stat.S_IFMT(mode), os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                what = ("other", stat.S_IFMT(mode))
            try:
                names = sorted(n for n in os.listxattr(p, follow_symlinks=False)
                               if not n.startswith("trusted.overlay."))
                xattrs = tuple((n, os.getxattr(p, n, follow_symlinks=False)) for n in names)
            except OSError:
                xattrs = ()
            mtime = st.st_mtime_ns // 10**9 if mtimes and not stat.S_ISDIR(mode) else None
            out[rel] = (*what, stat.S_IMODE(mode), st.st_uid, st.st_gid, xattrs, mtime)
    return out


def tar_names(data: bytes) -> list[str]:
    """Entry names of a (possibly compressed) layer, as Python's tarfile reads them."""
    raw = comp.DecompressingReader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return tf.getnames()


def tar_members(data: bytes) -> list[tarfile.TarInfo]:
    raw = comp.DecompressingReader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return tf.getmembers()


@contextmanager
def overlay_mount(lowers: list[Path], upper: Path, work: Path, merged: Path, options: str = ""):
    """A real overlayfs mount (root only); `lowers` top first."""
    opts = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    if options:
        opts += "," + options
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@contextmanager
def overlay_readonly(lowers: list[Path], merged: Path):
    """A read-only overlay of lower dirs only (how a snapshot chain is seen)."""
    opts = f"lowerdir={':'.join(map(str, lowers))}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)
