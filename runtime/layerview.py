"""Read files from a stack of unpacked layers without mounting them.

The layers are snapshot directories in overlayfs form (a whiteout is a 0/0
character device, an opaque directory carries trusted.overlay.opaque=y), top
first. Lookups follow overlayfs' merge rules (storage.pathwalk.OverlayTree)
and resolve symlinks with storage.pathwalk.walk as if the merged tree were
`/`, so a hostile image cannot make us read or write host files.
Used to resolve USER from /etc/passwd before a container exists, to make a
container's init layer, and by the builder for COPY/WORKDIR targets and
--from sources.
"""
from __future__ import annotations

import os
import stat

from storage.errors import PathError
from storage.pathwalk import OPAQUE_XATTR, Entry, OverlayTree, Walked, is_opaque, is_whiteout, walk

from .errors import UnsafePath

__all__ = ["OPAQUE_XATTR", "Entry", "LayerView", "is_opaque", "is_whiteout"]


class LayerView:
    def __init__(self, layers_top_first: list[str]):
        self.tree = OverlayTree(layers_top_first)
        self.layers = self.tree.layers

    def walk(self, path: str, follow_last: bool = True) -> Walked[Entry]:
        """Where `path` leads in the merged tree (see storage.pathwalk.Walked)."""
        try:
            return walk(self.tree, path, follow_last=follow_last)
        except PathError as e:
            raise UnsafePath(str(e)) from None

    def resolve(self, path: str, follow_last: bool = True) -> tuple[list[str], Entry | None]:
        """Components of `path` with symlinks resolved inside the view (where it
        would be when missing), and its entry (None when missing or blocked)."""
        w = self.walk(path, follow_last)
        return list(w.parts), w.node

    def stat(self, path: str) -> os.stat_result | None:
        e = self.walk(path).node
        return e.st if e else None

    def read_file(self, path: str, limit: int = 16 << 20) -> bytes | None:
        """Contents of the regular file at `path` in the merged tree, or None."""
        e = self.walk(path).node
        if e is None or not stat.S_ISREG(e.st.st_mode):
            return None
        fd = os.open(e.host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePath(f"{path}: larger than {limit} bytes")
        return data

    def listdir(self, path: str) -> dict[str, Entry]:
        """Visible entries of the merged directory at `path` (a real path: no symlinks followed)."""
        return self.tree.listdir([c for c in path.split("/") if c and c != "."])
