"""Helpers shared by the layer tests (no tests here): tree snapshots, tar
building for hostile input, overlay mounts."""
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


def make_tar(entries: list[tuple], gzip: bool = False) -> bytes:
    """A tar built entry by entry, hostile ones included:
    ("file", name, data) ("dir", name) ("sym", name, target) ("link", name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "file":
                data = rest[0] if rest else b""
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            elif kind == "xattr-file":
                ti.pax_headers = rest[0]
                ti.mode = 0o644
            tf.addfile(ti)
    data = buf.getvalue()
    if gzip:
        import gzip as gz
        return gz.compress(data, mtime=0)
    return data


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
