"""The registry's facts in SQLite: repositories, blob links, manifests, tags,
referrers and upload sessions.

Blob bytes are shared by every repository (one BlobStore); a blob is readable
in a repository only through a link row, made when it was pushed or mounted
there. Every write that makes a blob reachable checks, inside its write
transaction, that the blob file is still there; garbage collection deletes
files inside its own write transaction, so the two never interleave.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from storage.metadata import MetadataDB, Migration

MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE reg_repositories (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL
    );
    CREATE TABLE reg_blob_links (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        added REAL NOT NULL,
        PRIMARY KEY (repo, digest)
    ) WITHOUT ROWID;
    CREATE INDEX reg_blob_links_digest ON reg_blob_links(digest);
    CREATE TABLE reg_manifests (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        subject TEXT,
        artifact_type TEXT,
        annotations TEXT,
        added REAL NOT NULL,
        PRIMARY KEY (repo, digest)
    ) WITHOUT ROWID;
    CREATE INDEX reg_manifests_subject ON reg_manifests(repo, subject) WHERE subject IS NOT NULL;
    CREATE INDEX reg_manifests_digest ON reg_manifests(digest);
    CREATE TABLE reg_manifest_refs (
        manifest TEXT NOT NULL,
        ref TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (manifest, ref)
    ) WITHOUT ROWID;
    CREATE INDEX reg_manifest_refs_ref ON reg_manifest_refs(ref);
    CREATE TABLE reg_tags (
        repo TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (repo, tag)
    ) WITHOUT ROWID;
    CREATE INDEX reg_tags_digest ON reg_tags(repo, digest);
    CREATE TABLE reg_uploads (
        id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        started REAL NOT NULL,
        updated REAL NOT NULL
    );
    """,
    # 2: each garbage collection that ran (online or `soko gc --registry`), for /metrics and the UI
    """
    CREATE TABLE reg_gc_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finished REAL NOT NULL,
        seconds REAL NOT NULL,
        blobs_removed INTEGER NOT NULL,
        bytes_freed INTEGER NOT NULL,
        manifests_removed INTEGER NOT NULL,
        tags_removed INTEGER NOT NULL
    );
    """,
]

# A check run inside a write transaction, before anything changes; it raises to refuse
# (quotas and immutable tags, policy.py). It reads through the RegistryDB and connection it is given.
Guard = Callable[["RegistryDB", sqlite3.Connection], None]

# reg_manifest_refs.kind
REF_BLOB = "blob"  # config or layer: must be a blob linked in the repository
REF_MANIFEST = "manifest"  # index child: must be a manifest in the repository


@dataclass(frozen=True)
class ManifestRow:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class UploadRow:
    id: str
    repo: str
    started: float
    updated: float


@dataclass
class NewManifest:
    """What a manifest PUT records, prepared off the transaction."""
    repo: str
    digest: str
    media_type: str
    size: int
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None
    refs: list[tuple[str, str]]  # (digest, REF_BLOB | REF_MANIFEST)


class RegistryDB:
    """Queries over the registry tables of one MetadataDB."""

    def __init__(self, db: MetadataDB):
        self.db = db
        db.migrate("registry", MIGRATIONS)
        # Writers of this process queue here, woken the moment the lock is
        # free, instead of in SQLite's busy handler, which sleeps and polls.
        # Other processes (`soko gc`) still meet SQLite's own lock.
        self.write_lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: keep it short (no fsync inside)."""
        with self.write_lock, self.db.transaction() as c:
            yield c

    def _execute(self, sql: str, params: Iterable[Any]) -> int:
        with self.write() as c:
            return c.execute(sql, tuple(params)).rowcount

    # -- reads (cheap point queries on indexed tables) ------------------------
    def repo_exists(self, repo: str) -> bool:
        return self.db.one("SELECT 1 FROM reg_repositories WHERE name=?", (repo,)) is not None

    def linked_size(self, repo: str, digest: str) -> int | None:
        row = self.db.conn.execute("SELECT size FROM reg_blob_links WHERE repo=? AND digest=?",
                                   (repo, digest)).fetchone()
        return None if row is None else row[0]

    def any_link(self, digest: str) -> bool:
        return self.db.one("SELECT 1 FROM reg_blob_links WHERE digest=? LIMIT 1", (digest,)) is not None

    def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None:
        row = self.db.conn.execute(
            "SELECT m.digest, m.media_type, m.size FROM reg_tags t JOIN reg_manifests m "
            "ON m.repo=t.repo AND m.digest=t.digest WHERE t.repo=? AND t.tag=?", (repo, tag)).fetchone()
        return None if row is None else ManifestRow(row[0], row[1], row[2])

    def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None:
        row = self.db.conn.execute("SELECT digest, media_type, size FROM reg_manifests WHERE repo=? AND digest=?",
                                   (repo, digest)).fetchone()
        return None if row is None else ManifestRow(row[0], row[1], row[2])

    def _page(self, column: str, table: str, where: list[str], params: list[Any], last: str | None,
              limit: int | None) -> list[str]:
        """One page of `column` in lexical order, after `last` (exclusive), as tags/list and _catalog want."""
        if last is not None:
            where = [*where, f"{column} > ?"]
            params = [*params, last]
        sql = f"SELECT {column} FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += f" ORDER BY {column}"
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, limit]
        return [r[0] for r in self.db.conn.execute(sql, params)]

    def tags(self, repo: str, last: str | None, limit: int | None) -> list[str]:
        return self._page("tag", "reg_tags", ["repo=?"], [repo], last, limit)

    def repositories(self, last: str | None, limit: int | None) -> list[str]:
        return self._page("name", "reg_repositories", [], [], last, limit)

    def referrers(self, repo: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        sql = ("SELECT digest, media_type, size, artifact_type, annotations FROM reg_manifests "
               "WHERE repo=? AND subject=?")
        params: list[Any] = [repo, subject]
        if artifact_type is not None:
            sql += " AND artifact_type=?"
            params.append(artifact_type)
        sql += " ORDER BY added, digest"
        return [Referrer(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None)
                for r in self.db.conn.execute(sql, params)]

    def repositories_like(self, needle: str, limit: int | None = None) -> list[str]:
        """Repository names containing `needle` (case-insensitive), in order (search)."""
        sql = "SELECT name FROM reg_repositories WHERE instr(lower(name), ?) > 0 ORDER BY name"
        params: list[Any] = [needle.lower()]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self.db.conn.execute(sql, params)]

    def repos_linking(self, digest: str, limit: int = 100) -> list[str]:
        """Repositories where `digest` is linked (a mount without `from` looks among them)."""
        return [r[0] for r in self.db.conn.execute(
            "SELECT repo FROM reg_blob_links WHERE digest=? ORDER BY repo LIMIT ?", (digest, limit))]

    @staticmethod
    def _namespace_where(ns: str) -> tuple[str, tuple[str, str, str]]:
        # `ns` itself and every name under `ns/` (the range keeps it on the primary key)
        return "(repo=? OR (repo>=? AND repo<?))", (ns, ns + "/", ns + "0")

    def namespace_usage(self, c: sqlite3.Connection, ns: str) -> int:
        """Bytes of the unique blobs (and manifests) linked into the namespace's repositories."""
        where, params = self._namespace_where(ns)
        row = c.execute(f"SELECT COALESCE(SUM(size), 0) FROM (SELECT digest, MAX(size) AS size FROM reg_blob_links "
                        f"WHERE {where} GROUP BY digest)", params).fetchone()
        return int(row[0])

    def in_namespace(self, c: sqlite3.Connection, ns: str, digest: str) -> bool:
        where, params = self._namespace_where(ns)
        return c.execute(f"SELECT 1 FROM reg_blob_links WHERE {where} AND digest=? LIMIT 1",
                         (*params, digest)).fetchone() is not None

    def tag_digest(self, c: sqlite3.Connection, repo: str, tag: str) -> str | None:
        row = c.execute("SELECT digest FROM reg_tags WHERE repo=? AND tag=?", (repo, tag)).fetchone()
        return None if row is None else row[0]

    def tags_of(self, c: sqlite3.Connection, repo: str, digest: str) -> list[str]:
        return [r[0] for r in c.execute("SELECT tag FROM reg_tags WHERE repo=? AND digest=? ORDER BY tag",
                                        (repo, digest))]

    def upload(self, upload_id: str) -> UploadRow | None:
        row = self.db.one("SELECT id, repo, started, updated FROM reg_uploads WHERE id=?", (upload_id,))
        return None if row is None else UploadRow(row[0], row[1], row[2], row[3])

    def count_uploads(self) -> int:
        return self.db.one("SELECT count(*) FROM reg_uploads")[0]

    # -- writes (call off the event loop: they may wait for the write lock) ---
    @staticmethod
    def _ensure_repo(c: sqlite3.Connection, repo: str, now: float) -> None:
        c.execute("INSERT OR IGNORE INTO reg_repositories(name, created) VALUES(?, ?)", (repo, now))

    def link_blob(self, repo: str, digest: str, size: int, still_there, guard: Guard | None = None) -> bool:
        """Link a blob into `repo` if `still_there()` says its file exists,
        checked inside the write transaction (so GC cannot delete it under us)."""
        now = time.time()
        with self.write() as c:
            if not still_there():
                return False
            if guard is not None:
                guard(self, c)
            self._ensure_repo(c, repo, now)
            c.execute("INSERT INTO reg_blob_links(repo, digest, size, added) VALUES(?, ?, ?, ?) "
                      "ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added", (repo, digest, size, now))
        return True

    def unlink_blob(self, repo: str, digest: str) -> bool:
        return self._execute("DELETE FROM reg_blob_links WHERE repo=? AND digest=?", (repo, digest)) > 0

    def missing_refs(self, c: sqlite3.Connection, repo: str, refs: Iterable[tuple[str, str]]) -> list[str]:
        missing = []
        for digest, kind in refs:
            table = "reg_blob_links" if kind == REF_BLOB else "reg_manifests"
            if c.execute(f"SELECT 1 FROM {table} WHERE repo=? AND digest=?", (repo, digest)).fetchone() is None:
                missing.append(digest)
        return missing

    def put_manifest(self, m: NewManifest, tags: list[str], place, guard: Guard | None = None,
                     require_refs: bool = True) -> list[str]:
        """Record a manifest (and its tags) whose references all exist in the
        repository; returns the missing references instead when some do not
        (unless not `require_refs`: a pull-through cache fetches them later).
        `place()` stores the manifest bytes as a blob, inside the transaction."""
        now = time.time()
        with self.write() as c:
            missing = self.missing_refs(c, m.repo, m.refs) if require_refs else []
            if missing:
                return missing
            if guard is not None:
                guard(self, c)
            place()
            self._ensure_repo(c, m.repo, now)
            c.execute(
                "INSERT INTO reg_manifests(repo, digest, media_type, size, subject, artifact_type, annotations, added) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added",
                (m.repo, m.digest, m.media_type, m.size, m.subject, m.artifact_type,
                 json.dumps(m.annotations, sort_keys=True) if m.annotations else None, now))
            c.executemany("INSERT OR IGNORE INTO reg_manifest_refs(manifest, ref, kind) VALUES(?, ?, ?)",
                          [(m.digest, d, k) for d, k in m.refs])
            c.execute("INSERT INTO reg_blob_links(repo, digest, size, added) VALUES(?, ?, ?, ?) "
                      "ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added", (m.repo, m.digest, m.size, now))
            for tag in tags:
                self._upsert_tag(c, m.repo, tag, m.digest, now)
        return []

    @staticmethod
    def _upsert_tag(c: sqlite3.Connection, repo: str, tag: str, digest: str, now: float) -> None:
        c.execute("INSERT INTO reg_tags(repo, tag, digest, updated) VALUES(?, ?, ?, ?) "
                  "ON CONFLICT(repo, tag) DO UPDATE SET digest=excluded.digest, updated=excluded.updated",
                  (repo, tag, digest, now))

    def set_tag(self, repo: str, tag: str, digest: str) -> bool:
        """Point `tag` at a manifest the repository has (False when it has not)."""
        with self.write() as c:
            if c.execute("SELECT 1 FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest)).fetchone() is None:
                return False
            self._upsert_tag(c, repo, tag, digest, time.time())
        return True

    def delete_tag(self, repo: str, tag: str) -> bool:
        return self._execute("DELETE FROM reg_tags WHERE repo=? AND tag=?", (repo, tag)) > 0

    def delete_manifest(self, repo: str, digest: str, guard: Guard | None = None) -> bool:
        """The manifest, every tag on it and its blob link in `repo`."""
        with self.write() as c:
            if guard is not None:
                guard(self, c)
            n = c.execute("DELETE FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest)).rowcount
            if not n:
                return False
            c.execute("DELETE FROM reg_tags WHERE repo=? AND digest=?", (repo, digest))
            c.execute("DELETE FROM reg_blob_links WHERE repo=? AND digest=?", (repo, digest))
        return True

    def new_upload(self, upload_id: str, repo: str) -> None:
        now = time.time()
        self._execute("INSERT INTO reg_uploads(id, repo, started, updated) VALUES(?, ?, ?, ?)",
                        (upload_id, repo, now, now))

    def touch_upload(self, upload_id: str) -> None:
        self._execute("UPDATE reg_uploads SET updated=? WHERE id=?", (time.time(), upload_id))

    def delete_upload(self, upload_id: str) -> None:
        self._execute("DELETE FROM reg_uploads WHERE id=?", (upload_id,))

    def finish_upload(self, upload_id: str | None, repo: str, digest: str, size: int, place,
                      guard: Guard | None = None) -> None:
        """Atomically: move the upload's file into place as a blob, link it
        into `repo` and forget the session."""
        now = time.time()
        with self.write() as c:
            if guard is not None:
                guard(self, c)
            place()
            self._ensure_repo(c, repo, now)
            c.execute("INSERT INTO reg_blob_links(repo, digest, size, added) VALUES(?, ?, ?, ?) "
                      "ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added", (repo, digest, size, now))
            c.execute("DELETE FROM reg_uploads WHERE id=?", (upload_id,))
