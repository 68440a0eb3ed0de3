"""`diff`: what a container changed, read from its upper directory (overlay form).

Docker's kinds: A (added: not in the image), C (changed: in the image too;
a directory counts as changed when it is in the upper directory at all, as
with Docker's overlay driver), D (deleted: a whiteout, or what an opaque
directory hides). The init layer's mount points are not changes: they sit
beneath the upper directory (initlayer.py).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .layerview import LayerView, is_opaque, is_whiteout

ADDED, CHANGED, DELETED = "A", "C", "D"


def changes(upper: Path, lowers: list[str]) -> list[tuple[str, str]]:
    """(kind, path) for everything in `upper` over `lowers` (top first), parents before children."""
    view = LayerView(lowers)
    out: list[tuple[str, str]] = []
    _walk(str(upper), [], view, True, out)
    return sorted(out, key=lambda kv: kv[1].split("/"))


def _walk(upper: str, parts: list[str], view: LayerView, in_lower: bool, out: list[tuple[str, str]]) -> None:
    here = os.path.join(upper, *parts) if parts else upper
    below = view.listdir("/".join(parts)) if in_lower else {}
    with os.scandir(here) as it:
        names = sorted(e.name for e in it)
    for name in names:
        path = "/" + "/".join(parts + [name])
        host = os.path.join(here, name)
        st = os.lstat(host)
        if is_whiteout(st):
            if name in below:
                out.append((DELETED, path))
            continue
        existed = name in below
        out.append((CHANGED if existed else ADDED, path))
        if stat.S_ISDIR(st.st_mode):
            lower_dir = existed and stat.S_ISDIR(below[name].st.st_mode)
            if lower_dir and is_opaque(host):
                gone = set(view.listdir("/".join(parts + [name]))) - set(os.listdir(host))
                out += [(DELETED, f"{path}/{n}") for n in sorted(gone)]
                lower_dir = False
            _walk(upper, parts + [name], view, lower_dir, out)
