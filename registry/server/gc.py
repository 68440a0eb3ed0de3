"""Online garbage collection of a registry root, safe while pushes go on.

Phase 1 (one metadata transaction): drop expired upload sessions; apply the
retention rules (delete the tags they do not keep, never an immutable one,
then the manifests of the repositories under a rule that no tag reaches any
more, once they are older than `grace`); with
`untagged`, drop manifests that no tag, no live index and no live subject
reaches; drop blob links that no manifest of their repository refers to.
Everything younger than `grace` is kept: a client pushes layers before the
manifest that uses them, and children before their index.

Phase 2 (a second transaction): delete blobs that no repository links and
whose last commit is older than `grace`, re-checking each inside the
transaction. Every server write that makes a blob reachable checks the blob
exists inside its own write transaction, and gc's transactions exclude those
writes (meta.gc_transaction), so a push never links a blob GC is deleting.
Blobs go only after the metadata that could reach them is committed gone, so
a crash in between leaves garbage, never a dangling link. On metadata shared
by several replicas, one collects at a time (meta.gc_run); the others skip
their turn (registry/METADATA.md).

Files are the content store's (storage.content), through its blocking view:
the directory under the root or S3 alike. Ingests a writer holds are busy and
never removed.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from storage.content import Blocking, blocking_session

from ..errors import RegistryError
from .config import ImmutableRule, RetentionRule
from .core import open_root
from .globs import matches
from .meta import GCRun, GCTx, RegistryMeta
from .sections import StorageOptions

DEFAULT_GRACE = 3600.0
DEFAULT_UPLOAD_TTL = 24 * 3600.0


@dataclass
class GCReport:
    dry_run: bool = False
    manifests_removed: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    tags_removed: int = 0
    tags_expired: list[tuple[str, str]] = field(default_factory=list)  # (repository, tag) retention removed
    links_removed: int = 0
    blobs_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    blobs_kept: int = 0
    uploads_removed: int = 0
    ingest_removed: int = 0
    skipped: bool = False  # another process was collecting (shared metadata): nothing done


def collect(root: str | os.PathLike, dry_run: bool = False, grace: float = DEFAULT_GRACE,
            untagged: bool = False, upload_ttl: float = DEFAULT_UPLOAD_TTL,
            retention: Sequence[RetentionRule] = (), immutable: Sequence[ImmutableRule] = (),
            storage: StorageOptions | None = None, metadata: str | None = None) -> GCReport:
    """Collect garbage in the registry at `root` (which a server may be using),
    whose blobs are in `storage` (default: the directory under the root) and
    metadata in the root or, with `metadata`, in that PostgreSQL database."""
    path = Path(root)
    if metadata is None and not (path / "metadata.db").is_file():
        raise RegistryError(f"{root} is not a registry root (no metadata.db)")
    store, meta = open_root(path, storage, metadata=metadata)
    try:
        with blocking_session(store) as blobs:
            return collect_store(blobs, meta, dry_run=dry_run, grace=grace, untagged=untagged,
                                 upload_ttl=upload_ttl, retention=retention, immutable=immutable)
    finally:
        meta.close()


def collect_store(blobs: Blocking, meta: RegistryMeta, dry_run: bool = False, grace: float = DEFAULT_GRACE,
                  untagged: bool = False, upload_ttl: float = DEFAULT_UPLOAD_TTL,
                  busy_uploads: set[str] | None = None, retention: Sequence[RetentionRule] = (),
                  immutable: Sequence[ImmutableRule] = ()) -> GCReport:
    with meta.gc_run() as mine:
        if not mine:
            return GCReport(dry_run=dry_run, skipped=True)
        return _collect(blobs, meta, dry_run, grace, untagged, upload_ttl, busy_uploads, retention, immutable)


def _collect(blobs: Blocking, meta: RegistryMeta, dry_run: bool, grace: float, untagged: bool, upload_ttl: float,
             busy_uploads: set[str] | None, retention: Sequence[RetentionRule],
             immutable: Sequence[ImmutableRule]) -> GCReport:
    report = GCReport(dry_run=dry_run)
    started = time.monotonic()
    now = time.time()
    cutoff = now - grace
    with meta.gc_transaction(commit=not dry_run) as tx:  # writers that link wait; readers go on
        expired = _expire_uploads(tx, blobs, now - upload_ttl, busy_uploads or set())
        report.uploads_removed = len(expired)
        if retention:
            report.tags_expired = _retention(tx, retention, immutable, now)
            # Every repository under a rule, not only those that lost a tag in this run: a
            # manifest untagged while younger than the grace goes in a later run.
            ruled = {repo for repo in tx.manifest_repositories()
                     if any(matches(r.repository, repo) for r in retention)}
            if ruled and not untagged:
                report.manifests_removed, _ = _untagged(tx, cutoff, ruled)
        if untagged:
            report.manifests_removed, report.tags_removed = _untagged(tx, cutoff)
        report.links_removed = tx.delete_dead_links(cutoff)
        tx.drop_orphans()
        candidates = _unlinked_blobs(tx.is_linked, blobs, cutoff) if dry_run else []
    if dry_run:
        report.blobs_removed = [d for d, _ in candidates]
        report.bytes_freed = sum(size for _, size in candidates)
        report.blobs_kept = sum(1 for _ in blobs.walk()) - len(candidates)
        return report
    for upload_id in expired:
        blobs.abort_ingest(upload_id)
    report.ingest_removed = _clean_ingest(meta.upload_ids(), blobs, cutoff)
    candidates = _unlinked_blobs(meta.any_link, blobs, cutoff)  # outside the lock: walks every blob
    with meta.gc_transaction() as tx:  # each one checked again where no push can link it meanwhile
        for digest, size in _unlinked_blobs(tx.is_linked, blobs, cutoff, only=[d for d, _ in candidates]):
            report.blobs_removed.append(digest)
            report.bytes_freed += size
        blobs.delete_many(report.blobs_removed)
        _record(tx, report, time.monotonic() - started)
    report.blobs_kept = sum(1 for _ in blobs.walk())
    return report


def _record(tx: GCTx, report: GCReport, seconds: float) -> None:
    """Remember the run (registry_stats reads it: /metrics, the UI)."""
    tx.record_gc(GCRun(time.time(), seconds, len(report.blobs_removed), report.bytes_freed,
                       len(report.manifests_removed), report.tags_removed + len(report.tags_expired),
                       f"{socket.gethostname()}:{os.getpid()}"))


def _busy(blobs: Blocking, upload_id: str) -> bool:
    info = blobs.ingest(upload_id)
    return info is not None and info.busy


def _expire_uploads(tx: GCTx, blobs: Blocking, before: float, busy: set[str]) -> list[str]:
    """Sessions idle since `before`, except those a server knows or is writing right now."""
    ids = [i for i in tx.stale_uploads(before) if i not in busy and not _busy(blobs, i)]
    tx.delete_uploads(ids)
    return ids


def _retention(tx: GCTx, rules: Sequence[RetentionRule], immutable: Sequence[ImmutableRule],
               now: float) -> list[tuple[str, str]]:
    """Delete the tags retention does not keep: per repository, the first rule
    whose glob matches keeps its newest `keep_last` tags and those pushed within
    `keep_days` (either keeps a tag); immutable tags always stay."""
    removed: list[tuple[str, str]] = []
    for repo in tx.tagged_repositories():
        rule = next((r for r in rules if matches(r.repository, repo)), None)
        if rule is None:
            continue
        for i, (tag, updated) in enumerate(tx.tags_by_age(repo)):
            if rule.keep_last is not None and i < rule.keep_last:
                continue
            if rule.keep_days is not None and updated >= now - rule.keep_days * 86400:
                continue
            if any(matches(r.repository, repo) and matches(r.tags, tag) for r in immutable):
                continue
            tx.delete_tag(repo, tag)
            removed.append((repo, tag))
    return removed


def _untagged(tx: GCTx, cutoff: float,
              repos: set[str] | None = None) -> tuple[list[tuple[str, str]], int]:
    """Delete manifests no tag reaches (through indexes and subjects), older than
    cutoff (only in `repos` when given)."""
    rows = [(m.repo, m.digest, m.subject, m.added) for m in tx.manifests()]
    children: dict[str, list[str]] = {}
    for manifest, ref in tx.index_children():
        children.setdefault(manifest, []).append(ref)
    referrers: dict[tuple[str, str], list[str]] = {}
    for repo, digest, subject, _ in rows:
        if subject:
            referrers.setdefault((repo, subject), []).append(digest)
    live = tx.tagged_manifests()
    live |= {(repo, digest) for repo, digest, _, added in rows if added >= cutoff}
    todo = list(live)
    while todo:
        repo, digest = todo.pop()
        for nxt in children.get(digest, []) + referrers.get((repo, digest), []):
            if (repo, nxt) not in live:
                live.add((repo, nxt))
                todo.append((repo, nxt))
    dead = [(repo, digest) for repo, digest, _, _ in rows
            if (repo, digest) not in live and (repos is None or repo in repos)]
    tags = 0
    for repo, digest in dead:
        tags += tx.delete_manifest(repo, digest)
    return dead, tags


def _unlinked_blobs(linked: Callable[[str], bool], blobs: Blocking, cutoff: float,
                    only: list[str] | None = None) -> list[tuple[str, int]]:
    """(digest, size) of blobs no repository links (`linked` says), committed before cutoff."""
    out = []
    for info in (blobs.walk() if only is None else (blobs.stat(d) for d in only)):
        if info is None or linked(info.digest):
            continue
        if info.modified < cutoff:
            out.append((info.digest, info.size))
    return out


def _clean_ingest(upload_ids: set[str], blobs: Blocking, cutoff: float) -> int:
    """Ingests of no session (abandoned single POSTs, crashed writes), older
    than cutoff, that no upload is writing (a stalled one keeps an old mtime)."""
    removed = 0
    for info in blobs.ingests():
        if info.ref in upload_ids or info.updated >= cutoff or info.busy:
            continue
        if blobs.abort_ingest(info.ref):
            removed += 1
    return removed
