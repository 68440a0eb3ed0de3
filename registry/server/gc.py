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
exists inside its own write transaction, so a push never links a blob GC is
deleting. Blobs go only after the metadata that could reach them is
committed gone, so a crash in between leaves garbage, never a dangling link.

Files are the content store's (storage.content), through its blocking view:
the directory under the root or S3 alike. Ingests a writer holds are busy and
never removed.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from storage.content import Blocking, blocking_session

from ..errors import RegistryError
from .config import ImmutableRule, RetentionRule
from .core import open_root
from .sections import StorageOptions
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
            retention: Sequence[RetentionRule] = (), immutable: Sequence[ImmutableRule] = (),
            storage: StorageOptions | None = None) -> GCReport:
    """Collect garbage in the registry at `root` (which a server may be using),
    whose blobs are in `storage` (default: the directory under the root)."""
    path = Path(root)
    if not (path / "metadata.db").is_file():
        raise RegistryError(f"{root} is not a registry root (no metadata.db)")
    store, meta = open_root(path, storage)
    try:
        with blocking_session(store) as blobs:
            return collect_store(blobs, meta, dry_run=dry_run, grace=grace, untagged=untagged,
                                 upload_ttl=upload_ttl, retention=retention, immutable=immutable)
    finally:
        meta.db.close()


def collect_store(blobs: Blocking, meta: RegistryDB, dry_run: bool = False, grace: float = DEFAULT_GRACE,
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
                # Every repository under a rule, not only those that lost a tag in this run: a
                # manifest untagged while younger than the grace goes in a later run.
                ruled = {repo for (repo,) in c.execute("SELECT DISTINCT repo FROM reg_manifests")
                         if any(matches(r.repository, repo) for r in retention)}
                if ruled and not untagged:
                    report.manifests_removed, _ = _untagged(c, cutoff, ruled)
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
        report.blobs_kept = sum(1 for _ in blobs.walk()) - len(candidates)
        return report
    for upload_id in expired:
        blobs.abort_ingest(upload_id)
    report.ingest_removed = _clean_ingest(c, blobs, cutoff)
    candidates = _unlinked_blobs(c, blobs, cutoff)  # outside the lock: walks every blob
    with meta.write():  # each one checked again where no push can link it meanwhile
        for digest, size in _unlinked_blobs(c, blobs, cutoff, only=[d for d, _ in candidates]):
            report.blobs_removed.append(digest)
            report.bytes_freed += size
        blobs.delete_many(report.blobs_removed)
        _record(c, report, time.monotonic() - started)
    report.blobs_kept = sum(1 for _ in blobs.walk())
    return report


def _record(c: sqlite3.Connection, report: GCReport, seconds: float) -> None:
    """Remember the run (registry_stats reads it: /metrics, the UI)."""
    c.execute("INSERT INTO reg_gc_runs(finished, seconds, blobs_removed, bytes_freed, manifests_removed, "
              "tags_removed) VALUES(?, ?, ?, ?, ?, ?)",
              (time.time(), seconds, len(report.blobs_removed), report.bytes_freed, len(report.manifests_removed),
               report.tags_removed + len(report.tags_expired)))


def _busy(blobs: Blocking, upload_id: str) -> bool:
    info = blobs.ingest(upload_id)
    return info is not None and info.busy


def _expire_uploads(c: sqlite3.Connection, blobs: Blocking, before: float, busy: set[str]) -> list[str]:
    """Sessions idle since `before`, except those a server knows or is writing right now."""
    ids = [r[0] for r in c.execute("SELECT id FROM reg_uploads WHERE updated < ?", (before,))
           if r[0] not in busy and not _busy(blobs, r[0])]
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


def _unlinked_blobs(c: sqlite3.Connection, blobs: Blocking, cutoff: float,
                    only: list[str] | None = None) -> list[tuple[str, int]]:
    """(digest, size) of blobs no repository links, committed before cutoff."""
    out = []
    for info in (blobs.walk() if only is None else (blobs.stat(d) for d in only)):
        if info is None:
            continue
        if c.execute("SELECT 1 FROM reg_blob_links WHERE digest=? LIMIT 1", (info.digest,)).fetchone():
            continue
        if info.modified < cutoff:
            out.append((info.digest, info.size))
    return out


def _clean_ingest(c: sqlite3.Connection, blobs: Blocking, cutoff: float) -> int:
    """Ingests of no session (abandoned single POSTs, crashed writes), older
    than cutoff, that no upload is writing (a stalled one keeps an old mtime)."""
    sessions = {r[0] for r in c.execute("SELECT id FROM reg_uploads")}
    removed = 0
    for info in blobs.ingests():
        if info.ref in sessions or info.updated >= cutoff or info.busy:
            continue
        if blobs.abort_ingest(info.ref):
            removed += 1
    return removed
