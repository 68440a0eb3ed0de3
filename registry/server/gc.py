"""Online garbage collection of a registry root, safe while pushes go on.

Phase 1 (one metadata transaction): drop expired upload sessions; apply the
retention rules (delete the tags they do not keep, never an immutable one,
then the manifests of those repositories that no tag reaches any more); with
`untagged`, drop manifests that no tag, no live index and no live subject
reaches; drop blob links that no manifest of their repository refers to.
Everything younger than `grace` is kept: a client pushes layers before the
manifest that uses them, and children before their index.

Phase 2 (a second transaction): delete blob files that no repository links
and that are older than `grace`, re-checking each inside the transaction.
Every server write that makes a blob reachable checks the file exists inside
its own write transaction, so a push never links a blob GC is deleting.
Files go only after the metadata that could reach them is committed gone,
so a crash in between leaves garbage, never a dangling link.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from storage.blobs import BlobStore
from storage.directio import unlink_unless_busy

from ..errors import RegistryError
from .config import ImmutableRule, RetentionRule
from .core import open_root
from .globs import matches
from .meta import RegistryDB

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


def collect(root: str | os.PathLike, dry_run: bool = False, grace: float = DEFAULT_GRACE,
            untagged: bool = False, upload_ttl: float = DEFAULT_UPLOAD_TTL,
            retention: Sequence[RetentionRule] = (), immutable: Sequence[ImmutableRule] = ()) -> GCReport:
    """Collect garbage in the registry at `root` (which a server may be using)."""
    path = Path(root)
    if not (path / "metadata.db").is_file():
        raise RegistryError(f"{root} is not a registry root (no metadata.db)")
    blobs, meta = open_root(path)
    try:
        return collect_store(blobs, meta, dry_run=dry_run, grace=grace, untagged=untagged, upload_ttl=upload_ttl,
                             retention=retention, immutable=immutable)
    finally:
        meta.db.close()


def collect_store(blobs: BlobStore, meta: RegistryDB, dry_run: bool = False, grace: float = DEFAULT_GRACE,
                  untagged: bool = False, upload_ttl: float = DEFAULT_UPLOAD_TTL,
                  busy_uploads: set[str] | None = None, retention: Sequence[RetentionRule] = (),
                  immutable: Sequence[ImmutableRule] = ()) -> GCReport:
    report = GCReport(dry_run=dry_run)
    started = time.monotonic()
    now = time.time()
    cutoff = now - grace
    c = meta.db.conn
    with meta.write_lock:  # this process's writers wait; readers go on
        c.execute("BEGIN IMMEDIATE")
        try:
            expired = _expire_uploads(c, blobs, now - upload_ttl, busy_uploads or set())
            report.uploads_removed = len(expired)
            if retention:
                report.tags_expired = _retention(c, retention, immutable, now)
                touched = {repo for repo, _ in report.tags_expired}
                if touched and not untagged:
                    report.manifests_removed, _ = _untagged(c, cutoff, touched)
            if untagged:
                report.manifests_removed, report.tags_removed = _untagged(c, cutoff)
            report.links_removed = _dead_links(c, cutoff)
            c.execute("DELETE FROM reg_manifest_refs WHERE manifest NOT IN (SELECT digest FROM reg_manifests)")
            c.execute("DELETE FROM reg_repositories WHERE name NOT IN (SELECT repo FROM reg_blob_links) "
                      "AND name NOT IN (SELECT repo FROM reg_manifests) AND name NOT IN (SELECT repo FROM reg_tags)")
            candidates = _unlinked_blobs(c, blobs, cutoff) if dry_run else []
            c.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
    if dry_run:
        report.blobs_removed = [d for d, _ in candidates]
        report.bytes_freed = sum(size for _, size in candidates)
        report.blobs_kept = sum(1 for _ in blobs) - len(candidates)
        return report
    for upload_id in expired:
        unlink_unless_busy(blobs.ingest_dir / f"upload-{upload_id}")
    report.ingest_removed = _clean_ingest(c, blobs, cutoff)
    candidates = _unlinked_blobs(c, blobs, cutoff)  # outside the lock: walks every blob
    with meta.write():  # each one checked again where no push can link it meanwhile
        for digest, size in _unlinked_blobs(c, blobs, cutoff, only=[d for d, _ in candidates]):
            report.blobs_removed.append(digest)
            report.bytes_freed += size
            blobs.delete(digest)
        _record(c, report, time.monotonic() - started)
    report.blobs_kept = sum(1 for _ in blobs)
    return report


def _record(c: sqlite3.Connection, report: GCReport, seconds: float) -> None:
    """Remember the run (registry_stats reads it: /metrics, the UI)."""
    c.execute("INSERT INTO reg_gc_runs(finished, seconds, blobs_removed, bytes_freed, manifests_removed, "
              "tags_removed) VALUES(?, ?, ?, ?, ?, ?)",
              (time.time(), seconds, len(report.blobs_removed), report.bytes_freed, len(report.manifests_removed),
               report.tags_removed + len(report.tags_expired)))


def _expire_uploads(c: sqlite3.Connection, blobs: BlobStore, before: float, busy: set[str]) -> list[str]:
    """Sessions idle since `before`, except those a server knows or is writing right now."""
    ids = [r[0] for r in c.execute("SELECT id FROM reg_uploads WHERE updated < ?", (before,))
           if r[0] not in busy and unlink_unless_busy(blobs.ingest_dir / f"upload-{r[0]}", unlink=False)]
    c.executemany("DELETE FROM reg_uploads WHERE id=?", [(i,) for i in ids])
    return ids


def _retention(c: sqlite3.Connection, rules: Sequence[RetentionRule], immutable: Sequence[ImmutableRule],
               now: float) -> list[tuple[str, str]]:
    """Delete the tags retention does not keep: per repository, the first rule
    whose glob matches keeps its newest `keep_last` tags and those pushed within
    `keep_days` (either keeps a tag); immutable tags always stay."""
    removed: list[tuple[str, str]] = []
    for (repo,) in c.execute("SELECT DISTINCT repo FROM reg_tags").fetchall():
        rule = next((r for r in rules if matches(r.repository, repo)), None)
        if rule is None:
            continue
        rows = c.execute("SELECT tag, updated FROM reg_tags WHERE repo=? ORDER BY updated DESC, tag DESC",
                         (repo,)).fetchall()
        for i, (tag, updated) in enumerate(rows):
            if rule.keep_last is not None and i < rule.keep_last:
                continue
            if rule.keep_days is not None and updated >= now - rule.keep_days * 86400:
                continue
            if any(matches(r.repository, repo) and matches(r.tags, tag) for r in immutable):
                continue
            c.execute("DELETE FROM reg_tags WHERE repo=? AND tag=?", (repo, tag))
            removed.append((repo, tag))
    return removed


def _untagged(c: sqlite3.Connection, cutoff: float,
              repos: set[str] | None = None) -> tuple[list[tuple[str, str]], int]:
    """Delete manifests no tag reaches (through indexes and subjects), older than
    cutoff (only in `repos` when given)."""
    rows = c.execute("SELECT repo, digest, subject, added FROM reg_manifests").fetchall()
    children: dict[str, list[str]] = {}
    for manifest, ref in c.execute("SELECT manifest, ref FROM reg_manifest_refs WHERE kind='manifest'"):
        children.setdefault(manifest, []).append(ref)
    referrers: dict[tuple[str, str], list[str]] = {}
    for repo, digest, subject, _ in rows:
        if subject:
            referrers.setdefault((repo, subject), []).append(digest)
    live = {(r[0], r[1]) for r in c.execute("SELECT repo, digest FROM reg_tags")}
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
        c.execute("DELETE FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest))
        tags += c.execute("DELETE FROM reg_tags WHERE repo=? AND digest=?", (repo, digest)).rowcount
    return dead, tags


def _dead_links(c: sqlite3.Connection, cutoff: float) -> int:
    """Links older than cutoff that are neither a manifest of their repository
    nor referred to by one."""
    return c.execute(
        "DELETE FROM reg_blob_links AS l WHERE l.added < ? "
        "AND NOT EXISTS (SELECT 1 FROM reg_manifests m WHERE m.repo=l.repo AND m.digest=l.digest) "
        "AND NOT EXISTS (SELECT 1 FROM reg_manifest_refs r JOIN reg_manifests m "
        "                ON m.digest=r.manifest AND m.repo=l.repo WHERE r.ref=l.digest)",
        (cutoff,)).rowcount


def _unlinked_blobs(c: sqlite3.Connection, blobs: BlobStore, cutoff: float,
                    only: list[str] | None = None) -> list[tuple[str, int]]:
    """(digest, size) of blob files no repository links, older than cutoff."""
    out = []
    for digest in (blobs if only is None else only):
        if c.execute("SELECT 1 FROM reg_blob_links WHERE digest=? LIMIT 1", (digest,)).fetchone():
            continue
        try:
            st = blobs.path(digest).stat()
        except FileNotFoundError:
            continue
        if st.st_mtime < cutoff:
            out.append((digest, st.st_size))
    return out


def _clean_ingest(c: sqlite3.Connection, blobs: BlobStore, cutoff: float) -> int:
    """Ingest files of no session (abandoned single POSTs, crashed writes), older
    than cutoff, that no upload is writing (a stalled one keeps an old mtime)."""
    sessions = {f"upload-{r[0]}" for r in c.execute("SELECT id FROM reg_uploads")}
    removed = 0
    for path, mtime in list(blobs.ingest_entries()):
        if path.name in sessions or mtime >= cutoff or path.is_dir():
            continue
        if unlink_unless_busy(path):
            removed += 1
    return removed
