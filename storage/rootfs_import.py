"""`soko import`: a root filesystem tarball becomes a one-layer image.

The tarball is stored as given (plain, gzip or zstd); the same pass checks
every entry name, and entries that would escape the root (`..`) make the
import fail with nothing left in the store.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import tarfile
from pathlib import Path
from typing import BinaryIO

from . import mediatypes as mt
from .archives.ingest import Ingest
from .errors import LayerError, UnsafePathError
from .images import ImageStore
from .layers_write import resolve_epoch
from .model import Descriptor, ImageConfig, Manifest


def check_entries(f: BinaryIO) -> int:
    """Validate entry names of an uncompressed tar stream; returns the count.

    Refused: `..` components, absolute names, hardlinks leaving the root, and
    entries written through a symlink the same tarball created (the classic
    `evil -> /etc`, then `evil/passwd`)."""
    count = 0
    symlinks: set[str] = set()
    try:
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                if ".." in parts or m.name.startswith("/"):
                    raise UnsafePathError(f"refusing tar entry {m.name!r}: it escapes the root")
                if m.islnk() and (".." in m.linkname.split("/") or m.linkname.startswith("/")):
                    raise UnsafePathError(f"refusing hardlink {m.name!r} -> {m.linkname!r}: it escapes the root")
                for i in range(1, len(parts)):
                    if "/".join(parts[:i]) in symlinks:
                        raise UnsafePathError(f"refusing tar entry {m.name!r}: it is written through the "
                                              f"symlink {'/'.join(parts[:i])!r}")
                if m.issym():
                    symlinks.add("/".join(parts))
                count += 1
    except tarfile.TarError as e:
        raise LayerError(f"not a valid tar archive: {e}") from None
    return count


def now_iso() -> str:
    """The creation time: SOURCE_DATE_EPOCH when set (validated as layers do), else now."""
    epoch = resolve_epoch(None)
    if epoch is not None:
        return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(store: ImageStore, source: BinaryIO | Path, changes: dict | None = None,
                  message: str | None = None, source_name: str = "-") -> Manifest:
    """Store `source` as a layer and commit a one-layer image around it.

    One pass over the tarball: it is stored as given while its entries are
    checked; any refusal discards the blob before anything refers to it."""
    counted: list[int] = []
    ingest = Ingest(store.blobs)
    try:
        opened = open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source)
        with opened as f:
            blob, diff_id, kind, size = ingest.put_layer(f, consume=lambda t: counted.append(check_entries(t)))
        if counted == [0]:
            raise LayerError("the tarball has no entries")
        created = now_iso()
        cfg = ImageConfig.new()
        comment = message or f"Imported from {source_name}"
        cfg.data["created"] = created
        cfg.data["comment"] = comment  # as `docker import` records it (inspect's Comment)
        cfg.config.update(changes or {})
        cfg.diff_ids.append(diff_id)
        cfg.history.append({"created": created, "created_by": "", "comment": comment})
        store.record_layer(diff_id, blob, kind, size)
        return store.commit(cfg, [Descriptor(mt.LAYER_BY_COMPRESSION["oci"][kind], blob, size)])
    except BaseException:
        ingest.rollback()
        raise
