"""Mount points a build step's container needed, taken back out of its change.

To mount /proc, /dev, /etc/hosts or a step's bind mounts, the runtime makes
an empty file or directory (and its parents) where the image has none. In a
build step's upper directory these would end up in the layer although the
command made none of them: each target is covered by its mount the whole
time the command runs, so an empty entry there is the runtime's own. Like
BuildKit's mount stub cleaner, run_step removes them again, together with
parent directories that were made (or copied up) only to hold them.
"""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Iterable

from . import etc_files, spec as specmod
from .errors import UnsafePath
from .layerview import LayerView, is_opaque


def mount_targets(user_mounts: Iterable[specmod.Mount]) -> list[str]:
    """Every path a container of run_step mounts on (the spec's mounts)."""
    return ([m["destination"] for m in specmod.BASE_MOUNTS] + list(etc_files.NAMES)
            + [m.destination for m in user_mounts])


def remove(upper: Path, lower: LayerView, targets: Iterable[str]) -> None:
    """Delete from `upper` the still-empty stubs of `targets` that `lower` (the base) lacks.

    Targets are resolved in the base as the runtime resolved them before the
    command started (a symlinked /etc/hosts puts its stub where the link points)."""
    found: list[list[str]] = []
    for target in set(targets):
        try:
            w = lower.walk(target)
        except UnsafePath:
            continue
        if w.parts and w.missing:
            found.append(list(w.parts))
    for parts in sorted(found, key=len, reverse=True):  # children before their parents
        host = upper.joinpath(*parts)
        if not _empty(host):
            continue
        host.rmdir() if host.is_dir() else host.unlink()
        for depth in range(len(parts) - 1, 0, -1):
            parent = upper.joinpath(*parts[:depth])
            if not (_empty(parent) and parent.is_dir()) or _changed(parent, lower, parts[:depth]):
                break
            parent.rmdir()


def _empty(p: Path) -> bool:
    """An empty regular file, or an empty directory that hides nothing below."""
    try:
        st = p.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return not any(p.iterdir()) and not is_opaque(str(p))
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _changed(d: Path, lower: LayerView, parts: list[str]) -> bool:
    """A directory the base has, with other mode or owner in upper: a real change to keep."""
    _, below = lower.resolve("/" + "/".join(parts), follow_last=False)
    if below is None:
        return False
    st = d.lstat()
    return (below.st.st_mode, below.st.st_uid, below.st.st_gid) != (st.st_mode, st.st_uid, st.st_gid)
