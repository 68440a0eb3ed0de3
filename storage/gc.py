"""Garbage collection of the local store: mark from references, sweep the rest.

Blobs younger than the grace period are kept even when unreachable: a build
or pull may have written them a moment ago and not yet recorded the image
that will reference them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .images import ImageStore

DEFAULT_GRACE = 3600.0


@dataclass
class GCReport:
    kept: int = 0
    removed: list[str] = field(default_factory=list)
    freed: int = 0
    ingest_removed: int = 0


def mark(store: ImageStore) -> set[str]:
    """Every blob reachable from the store's images, indexes, tags and holds."""
    seen: set[str] = set()
    todo = list(store.roots())
    while todo:
        digest = todo.pop()
        if digest in seen or not store.blobs.has(digest):
            continue
        seen.add(digest)
        if store.blobs.size(digest) > 4 * 1024 * 1024:
            continue  # no manifest is this big; a layer
        with store.blobs.open(digest) as f:
            if f.read(1) != b"{":
                continue  # a layer (tar or compressed): never read it whole
            rest = f.read()
        try:
            obj = json.loads(b"{" + rest)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("mediaType") or ("index" if "manifests" in obj else "manifest" if "layers" in obj else None)
        if kind is None:
            continue
        for d in [obj.get("config"), obj.get("subject"), *(obj.get("layers") or []),
                  *(obj.get("manifests") or [])]:
            if isinstance(d, dict) and isinstance(d.get("digest"), str):
                todo.append(d["digest"])
    return seen


def collect(store: ImageStore, dry_run: bool = False, grace: float = DEFAULT_GRACE) -> GCReport:
    live = mark(store)
    report = GCReport()
    cutoff = time.time() - grace
    with store.db.transaction():  # writers wait while we sweep; readers go on
        for digest in list(store.blobs):
            if digest in live:
                report.kept += 1
                continue
            path = store.blobs.path(digest)
            st = path.stat()
            if st.st_mtime > cutoff:
                report.kept += 1
                continue
            report.removed.append(digest)
            report.freed += st.st_size
            if not dry_run:
                store.blobs.delete(digest)
        if not dry_run:
            removed = set(report.removed)
            store.forget(removed)
            store.db.conn.executemany("DELETE FROM layers WHERE blob_digest=?", [(d,) for d in removed])
            store.db.conn.executemany("DELETE FROM layer_sources WHERE blob_digest=?", [(d,) for d in removed])
    if not dry_run:
        report.ingest_removed = store.blobs.clean_ingest(grace)
    return report
