"""The snapshotter seam: an active snapshot over read-only layers, as mounts.

A container's root is an *active snapshot*: the image's layers (snapshot
directories in overlay form, see snapshots.py) plus a writable part. Like
containerd's snapshotters, `prepare` does not mount anything: it returns the
mounts that make the root, which the container's first process performs in
its own mount namespace (child.mount_root), and `commit` gives the
snapshot's change as an overlay upper directory (whiteouts as 0/0 character
devices, opaque directories marked), the form a layer is written from.

Two implementations: overlay (the kernel merges; the upper directory *is*
the change) and copy (where overlayfs cannot be mounted, e.g. a store on
overlayfs: the layers are copied into one tree and compared afterwards).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# redirect_dir/metacopy/index off: the upper must hold plain files and whiteouts
# that a layer can be written from, whatever the kernel defaults. volatile: no
# sync of the whole upper filesystem when the overlay goes away (tens of ms on
# a busy disk); a container's upper directory does not survive a host crash as
# an image does anyway. Kernels that do not know one of them mount without.
OVERLAY_EXTRAS = ["redirect_dir=off", "index=off", "metacopy=off", "volatile"]


@dataclass
class RootMount:
    """One mount of a container root, containerd's Mount: type, source, options."""
    type: str  # "overlay" or "bind"
    source: str
    options: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)  # options dropped when the kernel refuses them

    def to_json(self) -> dict:
        return {"type": self.type, "source": self.source, "options": list(self.options),
                "optional": list(self.optional)}

    @classmethod
    def from_json(cls, d: dict) -> "RootMount":
        return cls(d["type"], d["source"], list(d.get("options", [])), list(d.get("optional", [])))


@dataclass
class Active:
    """Where an active snapshot lives: its lowers (top first) and its own directories."""
    lowers: list[str]
    upper: Path
    work: Path
    merged: Path  # the copy snapshotter's tree

    def to_json(self) -> dict:
        return {"lowers": list(self.lowers), "upper": str(self.upper), "work": str(self.work),
                "merged": str(self.merged)}

    @classmethod
    def from_json(cls, d: dict) -> "Active":
        return cls(list(d["lowers"]), Path(d["upper"]), Path(d["work"]), Path(d["merged"]))


class Snapshotter(Protocol):
    name: str

    def prepare(self, a: Active) -> list[RootMount]:
        """Make the snapshot's directories; the mounts that give its root."""

    def commit(self, a: Active, into: Path | None = None) -> Path:
        """The change so far as an overlay upper directory (`into`, else `a.upper`)."""

    def remove(self, a: Active) -> None:
        """Delete what prepare made besides the upper directory."""


class Overlay:
    name = "overlay"

    def prepare(self, a: Active) -> list[RootMount]:
        a.upper.mkdir(mode=0o755, exist_ok=True)
        if any(a.work.iterdir()) if a.work.is_dir() else False:
            _remove(a.work)  # a volatile mount leaves work/incompat/volatile, which fails the next mount
        a.work.mkdir(mode=0o755, exist_ok=True)
        opts = [f"lowerdir={':'.join(a.lowers)}", f"upperdir={a.upper}", f"workdir={a.work}"]
        return [RootMount("overlay", "overlay", opts, list(OVERLAY_EXTRAS))]

    def commit(self, a: Active, into: Path | None = None) -> Path:
        return a.upper  # the kernel kept it in overlay form all along

    def remove(self, a: Active) -> None:
        _remove(a.work)


class Copy:
    name = "copy"

    def prepare(self, a: Active) -> list[RootMount]:
        """The layers (and any earlier upper) copied into one tree, once per snapshot."""
        from .copy import copy_tree

        a.upper.mkdir(mode=0o755, exist_ok=True)
        if not a.merged.is_dir():
            tmp = a.merged.with_name(a.merged.name + ".tmp")
            _remove(tmp)
            tmp.mkdir(mode=0o755)
            for layer in list(reversed(a.lowers)) + [str(a.upper)]:
                copy_tree(layer, str(tmp), layer=True)
            os.rename(tmp, a.merged)
        return [RootMount("bind", str(a.merged), ["rbind"])]

    def commit(self, a: Active, into: Path | None = None) -> Path:
        """Compare the tree with the layers beneath, writing the overlay form."""
        from .diff import overlay_diff
        from .layerview import LayerView

        out = into or a.upper
        _remove(out)
        out.mkdir(mode=0o755)
        if a.merged.is_dir():
            overlay_diff(LayerView(list(a.lowers)), str(a.merged), str(out))
        return out

    def remove(self, a: Active) -> None:
        _remove(a.merged)


SNAPSHOTTERS: dict[str, Snapshotter] = {"overlay": Overlay(), "copy": Copy()}


def get(name: str) -> Snapshotter:
    return SNAPSHOTTERS[name]


def _remove(d: Path) -> None:
    if os.path.lexists(d):
        from .containers import remove_dir

        remove_dir(d)
