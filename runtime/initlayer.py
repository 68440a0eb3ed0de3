"""A container's init layer: the mount points its image lacks, beneath its upper directory.

To mount /proc, /dev, /etc/hosts or a volume, the target must exist in the
root. Made in the upper directory, these empty files and directories would
count as the container's change: a build step's layer, `diff` and `commit`
would show them although the command made none. So, as Docker does with its
"-init" layer, they are made in a layer of their own between the image and
the upper directory. Directories made only to hold a target take the
image's metadata for that path, so the merged tree looks like the image.

Targets are resolved in the image as the runtime resolves them (symlinks
followed inside the image: a `/etc/hosts` linking to `/var/hosts` puts the
target at /var/hosts), and created only inside the fresh init directory,
which holds nothing but what is made here (no symlink to follow out of it).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from . import etc_files, spec as specmod
from .errors import UnsafePath
from .layerview import LayerView


def targets(user_mounts: Iterable[specmod.Mount]) -> list[tuple[str, bool]]:
    """(mount target, is a directory) of every mount made on the root itself.

    Mounts inside another mount (/dev/pts in the /dev tmpfs) are made there, not in the root."""
    out: list[tuple[str, bool]] = [(m["destination"], True) for m in specmod.BASE_MOUNTS]
    out += [(p, False) for p in etc_files.NAMES]
    for m in user_mounts:
        is_dir = m.type != "bind" or os.path.isdir(m.source)
        out.append((m.destination, is_dir))
    dests = [t.rstrip("/") for t, _ in out]
    return [(t, d) for t, d in out if not any(t.rstrip("/").startswith(o + "/") for o in dests if o)]


def make(init: Path, lower: LayerView, wanted: Iterable[tuple[str, bool]]) -> None:
    """Create `init` holding the missing targets of `wanted` (and the directories above them)."""
    init.mkdir(mode=0o755)
    made_dirs: list[tuple[Path, os.stat_result | None]] = []
    for target, is_dir in wanted:
        try:
            w = lower.walk(target)
        except UnsafePath:
            continue  # the runtime refuses it later, with the reason
        if not w.parts or not w.missing or w.notdir:
            continue
        parts = list(w.parts)
        for depth in range(1, len(parts)):
            d = init.joinpath(*parts[:depth])
            if not d.is_dir():
                d.mkdir(mode=0o755)
                made_dirs.append((d, lower.stat("/" + "/".join(parts[:depth]))))
        leaf = init.joinpath(*parts)
        if os.path.lexists(leaf):
            continue
        if is_dir:
            leaf.mkdir(mode=0o755)
        else:
            os.close(os.open(leaf, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    for d, st in reversed(made_dirs):  # deepest first: a parent's mtime is set after its children
        if st is not None and stat.S_ISDIR(st.st_mode):
            os.chown(d, st.st_uid, st.st_gid)
            os.chmod(d, stat.S_IMODE(st.st_mode))
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
