"""`soko import`: a root filesystem tarball becomes a one-layer image.

The tarball is stored as given (plain, gzip or zstd) after one pass that
checks every entry name: entries that would escape the root (`..`) make the
import fail before anything is stored.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from . import mediatypes as mt
from .archives.ingest import Ingest
from .compression import open_reader
from .errors import LayerError, UnsafePathError
from .images import ImageStore
from .model import Descriptor, ImageConfig, Manifest


def check_entries(f: BinaryIO) -> int:
    """Validate entry names of a (possibly compressed) tar; returns the count.

    Refused: `..` components, absolute names, hardlinks leaving the root, and
    entries written through a symlink the same tarball created (the classic
    `evil -> /etc`, then `evil/passwd`)."""
    count = 0
    symlinks: set[str] = set()
    try:
        with tarfile.open(fileobj=open_reader(f), mode="r|") as tar:
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
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if not epoch else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def import_rootfs(store: ImageStore, source: BinaryIO | Path, changes: dict | None = None,
                  message: str | None = None, source_name: str = "-") -> Manifest:
    """Store `source` as a layer and commit a one-layer image around it."""
    tmp = None
    if not isinstance(source, Path):  # a stream (stdin): spool it so it can be read twice
        tmp = store.blobs.new_temp(".import")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        source = tmp
    ingest = Ingest(store.blobs)
    try:
        with open(source, "rb") as f:
            if check_entries(f) == 0:
                raise LayerError("the tarball has no entries")
            f.seek(0)
            blob, diff_id, kind, size = ingest.put_layer(f)
        created = now_iso()
        cfg = ImageConfig.new()
        cfg.data["created"] = created
        cfg.config.update(changes or {})
        cfg.diff_ids.append(diff_id)
        cfg.history.append({"created": created, "created_by": "",
                            "comment": message or f"Imported from {source_name}"})
        store.record_layer(diff_id, blob, kind, size)
        return store.commit(cfg, [Descriptor(mt.LAYER_BY_COMPRESSION["oci"][kind], blob, size)])
    except BaseException:
        ingest.rollback()
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
