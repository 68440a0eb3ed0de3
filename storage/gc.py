"""Garbage collection of the local store: mark from references, sweep the rest.

Blobs younger than the grace period are kept even when unreachable: a build
or pull may have written them a moment ago and not yet recorded the image
that will reference them.

What a blob is comes from what the store knows, never from its first bytes
(a manifest may start with white space or a BOM): a manifest or index the
metadata records, or a blob that a kept index lists with a manifest media
type. Those are parsed and followed; every other blob (configs, layers) is
a leaf and never read.

Edges, as distribution treats them: an index keeps its children, a manifest
its config and layers, and a manifest with a `subject` keeps its subject.
Referrers are kept as the distribution-spec maintainers advise registries
(and as soko's registry gc does): a recorded manifest whose `subject` is a
kept manifest is kept, like the child of a kept index; when its subject goes,
it goes too.

A layer's other stored forms (the compressed blob a push made of an
uncompressed layer, storage.layer_variants) live as long as the layer does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import mediatypes as mt
from .errors import StorageError
from .images import ImageStore
from .model import MAX_JSON, Index, Manifest, parse_manifest

DEFAULT_GRACE = 3600.0


@dataclass
class GCReport:
    kept: int = 0
    removed: list[str] = field(default_factory=list)
    freed: int = 0
    ingest_removed: int = 0


def _edges(m: Manifest | Index) -> list[tuple[str, str]]:
    """(digest, declared media type) of what `m` keeps alive."""
    out = [(d.digest, d.media_type) for d in m.references()]
    if m.subject is not None:
        out.append((m.subject.digest, m.subject.media_type))
    return out


def _declared_manifest(store: ImageStore, digest: str) -> Manifest | Index | None:
    """A blob a descriptor calls a manifest but the metadata does not record."""
    if store.blobs.size(digest) > MAX_JSON:
        return None
    try:
        return parse_manifest(store.blobs.read_bytes(digest), digest=digest)
    except StorageError:
        return None


def reachable(store: ImageStore) -> set[str]:
    """Every blob reachable from the store's tags and holds (not yet the other
    forms of their layers: ImageStore.layer_alternates)."""
    known = {m.digest: m for m in store.recorded()}
    referrers: dict[str, list[str]] = {}
    for m in known.values():
        if m.subject is not None:
            referrers.setdefault(m.subject.digest, []).append(m.digest)
    seen: set[str] = set()
    todo: list[tuple[str, str | None]] = [(d, None) for d in store.roots()]
    while todo:
        digest, declared = todo.pop()
        if digest in seen or not store.blobs.has(digest):
            continue
        seen.add(digest)
        m = known.get(digest)
        if m is None and declared in mt.ALL_MANIFESTS:
            m = _declared_manifest(store, digest)
        if m is None:
            continue  # a config or a layer
        todo.extend(_edges(m))
        todo.extend((r, None) for r in referrers.get(digest, []))
    return seen


def collect(store: ImageStore, dry_run: bool = False, grace: float = DEFAULT_GRACE,
            candidates: set[str] | None = None) -> GCReport:
    """Sweep what nothing reaches. With `candidates` (the blobs of images just removed), only
    those are swept, and without the grace period: they were recorded, so not in flight."""
    if candidates is None:
        [live] = store.layer_alternates(reachable(store))
    else:
        live, candidates = store.layer_alternates(reachable(store), candidates)
    report = GCReport()
    cutoff = time.time() - grace
    with store.db.transaction():  # writers wait while we sweep; readers go on
        for digest in list(store.blobs) if candidates is None else sorted(candidates):
            if digest in live or not store.blobs.has(digest):
                report.kept += 1
                continue
            st = store.blobs.stat(digest)
            if st is None:
                continue
            if candidates is None and st.st_mtime > cutoff:
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
    if not dry_run and candidates is None:
        report.ingest_removed = store.blobs.clean_ingest(grace)
    return report
