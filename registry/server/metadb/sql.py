"""The registry's queries, written once for both dialects.

SQL here uses `?` placeholders and what SQLite and PostgreSQL both accept
(`INSERT ... ON CONFLICT`, `CAST(SUM(..) AS BIGINT)`, aliased subqueries);
the few words they spell differently are attributes of the dialect class
(`CONTAINS`, `GREATEST`). Connections, transactions and locks are the
subclasses' (sqlite.py, postgres.py).
"""
from __future__ import annotations

import json
import time
from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Protocol, Sequence

from ..meta import (REF_BLOB, GCRun, Guard, ManifestNode, ManifestRow, NewManifest, Referrer, RegistryMeta,
                    RegistryStats, RepoRow, TagRow, UploadRow, Visible)

REPO_SORTS = {"name": "r.name", "tags": "tags", "size": "size", "pushed": "pushed"}
TAG_SORTS = {"name": "t.tag", "pushed": "t.updated"}


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class Conn(Protocol):
    """What the queries need of a connection (sqlite3's, or postgres.py's wrapper)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...
    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Any: ...


def _namespace_where(ns: str) -> tuple[str, tuple[str, str, str]]:
    # `ns` itself and every name under `ns/` (the range keeps it on the primary key)
    return "(repo=? OR (repo>=? AND repo<?))", (ns, ns + "/", ns + "0")


def _link(c: Conn, repo: str, digest: str, size: int, now: float) -> None:
    c.execute("INSERT INTO reg_blob_links(repo, digest, size, added) VALUES(?, ?, ?, ?) "
              "ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added", (repo, digest, size, now))


def _ensure_repo(c: Conn, repo: str, now: float) -> None:
    c.execute("INSERT INTO reg_repositories(name, created) VALUES(?, ?) ON CONFLICT(name) DO NOTHING", (repo, now))


def _upsert_tag(c: Conn, repo: str, tag: str, digest: str, now: float) -> None:
    c.execute("INSERT INTO reg_tags(repo, tag, digest, updated) VALUES(?, ?, ?, ?) "
              "ON CONFLICT(repo, tag) DO UPDATE SET digest=excluded.digest, updated=excluded.updated",
              (repo, tag, digest, now))


class SQLTx:
    """A write transaction: what guards read (meta.Tx) and what gc does (meta.GCTx)."""

    def __init__(self, meta: "SQLMeta", c: Conn):
        self.meta, self.c = meta, c

    def lock(self, key: str) -> None:
        self.meta.lock_key(self.c, key)

    # -- guards ----------------------------------------------------------------------------------------
    def in_namespace(self, ns: str, digest: str) -> bool:
        where, params = _namespace_where(ns)
        return self.c.execute(f"SELECT 1 FROM reg_blob_links WHERE {where} AND digest=? LIMIT 1",
                              (*params, digest)).fetchone() is not None

    def namespace_usage(self, ns: str) -> int:
        """Bytes of the unique blobs (and manifests) linked into the namespace's repositories."""
        where, params = _namespace_where(ns)
        row = self.c.execute("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM (SELECT digest, MAX(size) AS size "
                             f"FROM reg_blob_links WHERE {where} GROUP BY digest) AS u", params).fetchone()
        return int(row[0])

    def tag_digest(self, repo: str, tag: str) -> str | None:
        row = self.c.execute("SELECT digest FROM reg_tags WHERE repo=? AND tag=?", (repo, tag)).fetchone()
        return None if row is None else row[0]

    def tags_of(self, repo: str, digest: str) -> list[str]:
        return [r[0] for r in self.c.execute("SELECT tag FROM reg_tags WHERE repo=? AND digest=? ORDER BY tag",
                                             (repo, digest))]

    def missing_refs(self, repo: str, refs: Iterable[tuple[str, str]]) -> list[str]:
        missing = []
        for digest, kind in refs:
            table = "reg_blob_links" if kind == REF_BLOB else "reg_manifests"
            if self.c.execute(f"SELECT 1 FROM {table} WHERE repo=? AND digest=?", (repo, digest)).fetchone() is None:
                missing.append(digest)
        return missing

    # -- garbage collection ------------------------------------------------------------------------------
    def stale_uploads(self, before: float) -> list[str]:
        return [r[0] for r in self.c.execute("SELECT id FROM reg_uploads WHERE updated < ?", (before,)).fetchall()]

    def delete_uploads(self, ids: Sequence[str]) -> None:
        self.c.executemany("DELETE FROM reg_uploads WHERE id=?", [(i,) for i in ids])

    def upload_ids(self) -> set[str]:
        return {r[0] for r in self.c.execute("SELECT id FROM reg_uploads")}

    def tagged_repositories(self) -> list[str]:
        return [r[0] for r in self.c.execute("SELECT DISTINCT repo FROM reg_tags").fetchall()]

    def tags_by_age(self, repo: str) -> list[tuple[str, float]]:
        return [(r[0], r[1]) for r in self.c.execute(
            "SELECT tag, updated FROM reg_tags WHERE repo=? ORDER BY updated DESC, tag DESC", (repo,)).fetchall()]

    def delete_tag(self, repo: str, tag: str) -> None:
        self.c.execute("DELETE FROM reg_tags WHERE repo=? AND tag=?", (repo, tag))

    def manifest_repositories(self) -> list[str]:
        return [r[0] for r in self.c.execute("SELECT DISTINCT repo FROM reg_manifests").fetchall()]

    def manifests(self) -> list[ManifestNode]:
        return [ManifestNode(r[0], r[1], r[2], r[3])
                for r in self.c.execute("SELECT repo, digest, subject, added FROM reg_manifests").fetchall()]

    def index_children(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in
                self.c.execute("SELECT manifest, ref FROM reg_manifest_refs WHERE kind='manifest'").fetchall()]

    def tagged_manifests(self) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in self.c.execute("SELECT repo, digest FROM reg_tags")}

    def delete_manifest(self, repo: str, digest: str) -> int:
        self.c.execute("DELETE FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest))
        return self.c.execute("DELETE FROM reg_tags WHERE repo=? AND digest=?", (repo, digest)).rowcount

    def delete_dead_links(self, cutoff: float) -> int:
        """Links older than cutoff that are neither a manifest of their repository
        nor referred to by one."""
        return self.c.execute(
            "DELETE FROM reg_blob_links AS l WHERE l.added < ? "
            "AND NOT EXISTS (SELECT 1 FROM reg_manifests m WHERE m.repo=l.repo AND m.digest=l.digest) "
            "AND NOT EXISTS (SELECT 1 FROM reg_manifest_refs r JOIN reg_manifests m "
            "                ON m.digest=r.manifest AND m.repo=l.repo WHERE r.ref=l.digest)",
            (cutoff,)).rowcount

    def drop_orphans(self) -> None:
        self.c.execute("DELETE FROM reg_manifest_refs WHERE manifest NOT IN (SELECT digest FROM reg_manifests)")
        self.c.execute("DELETE FROM reg_repositories WHERE name NOT IN (SELECT repo FROM reg_blob_links) "
                       "AND name NOT IN (SELECT repo FROM reg_manifests) AND name NOT IN (SELECT repo FROM reg_tags)")

    def is_linked(self, digest: str) -> bool:
        return self.c.execute("SELECT 1 FROM reg_blob_links WHERE digest=? LIMIT 1", (digest,)).fetchone() is not None

    def record_gc(self, run: GCRun) -> None:
        self.c.execute("INSERT INTO reg_gc_runs(finished, seconds, blobs_removed, bytes_freed, manifests_removed, "
                       "tags_removed, runner) VALUES(?, ?, ?, ?, ?, ?, ?)",
                       (run.finished, run.seconds, run.blobs_removed, run.bytes_freed, run.manifests_removed,
                        run.tags_removed, run.runner))


# A repository's name, tag count, linked bytes and last push (each on an index range of its own)
_FIGURES = ("r.name,"
            " (SELECT count(*) FROM reg_tags t WHERE t.repo=r.name) AS tags,"
            " (SELECT CAST(COALESCE(SUM(l.size), 0) AS BIGINT) FROM reg_blob_links l WHERE l.repo=r.name) AS size,"
            " {greatest}(COALESCE((SELECT MAX(t.updated) FROM reg_tags t WHERE t.repo=r.name), 0),"
            "     COALESCE((SELECT MAX(m.added) FROM reg_manifests m WHERE m.repo=r.name), 0)) AS pushed")


class SQLMeta(RegistryMeta):
    """RegistryMeta over a SQL connection; subclasses bring connections, transactions and locks."""

    CONTAINS = "instr(lower({column}), ?) > 0"  # a case-insensitive substring test on `column`
    GREATEST = "max"  # the larger of two values

    # -- what a dialect provides --------------------------------------------------------------------------
    @abstractmethod
    def reading(self) -> AbstractContextManager[Conn]:
        """A connection for reads (autocommit: each statement sees what is committed)."""

    @abstractmethod
    def writing(self, exclude_gc: bool) -> AbstractContextManager[Conn]:
        """A write transaction; `exclude_gc`: it links, tags or deletes, so it must
        not overlap a gc transaction (METADATA.md). Upload session rows need not."""

    @abstractmethod
    def lock_key(self, c: Conn, key: str) -> None:
        """Tx.lock: hold `key` until the transaction ends."""

    @abstractmethod
    def visible_where(self, c: Conn, visible: Visible, column: str) -> tuple[str, list[Any]]:
        """A condition keeping the rows whose `column` (a repository name) `visible` allows."""

    def _tx(self, c: Conn) -> SQLTx:
        return SQLTx(self, c)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.reading() as c:
            return c.execute(sql, params).fetchall()

    def _first(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.reading() as c:
            return c.execute(sql, params).fetchone()

    def _count(self, sql: str, params: Sequence[Any], exclude_gc: bool = True) -> int:
        with self.writing(exclude_gc) as c:
            return c.execute(sql, params).rowcount

    # -- point reads -----------------------------------------------------------------------------------------
    def repo_exists(self, repo: str) -> bool:
        return self._first("SELECT 1 FROM reg_repositories WHERE name=?", (repo,)) is not None

    def linked_size(self, repo: str, digest: str) -> int | None:
        row = self._first("SELECT size FROM reg_blob_links WHERE repo=? AND digest=?", (repo, digest))
        return None if row is None else row[0]

    def any_link(self, digest: str) -> bool:
        return self._first("SELECT 1 FROM reg_blob_links WHERE digest=? LIMIT 1", (digest,)) is not None

    def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None:
        row = self._first("SELECT m.digest, m.media_type, m.size FROM reg_tags t JOIN reg_manifests m "
                          "ON m.repo=t.repo AND m.digest=t.digest WHERE t.repo=? AND t.tag=?", (repo, tag))
        return None if row is None else ManifestRow(row[0], row[1], row[2])

    def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None:
        row = self._first("SELECT digest, media_type, size FROM reg_manifests WHERE repo=? AND digest=?",
                          (repo, digest))
        return None if row is None else ManifestRow(row[0], row[1], row[2])

    def upload(self, upload_id: str) -> UploadRow | None:
        row = self._first("SELECT id, repo, started, updated FROM reg_uploads WHERE id=?", (upload_id,))
        return None if row is None else UploadRow(row[0], row[1], row[2], row[3])

    # -- listings ------------------------------------------------------------------------------------------------
    def _page(self, column: str, table: str, where: list[str], params: list[Any], last: str | None,
              limit: int | None) -> list[str]:
        if last is not None:
            where = [*where, f"{column} > ?"]
            params = [*params, last]
        sql = f"SELECT {column} FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += f" ORDER BY {column}"
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, limit]
        return [r[0] for r in self._all(sql, params)]

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
        return [Referrer(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None) for r in self._all(sql, params)]

    def repositories_like(self, needle: str, limit: int | None = None) -> list[str]:
        sql = f"SELECT name FROM reg_repositories WHERE {self.CONTAINS.format(column='name')} ORDER BY name"
        params: list[Any] = [needle.lower()]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self._all(sql, params)]

    def repos_linking(self, digest: str, limit: int = 100) -> list[str]:
        return [r[0] for r in self._all("SELECT repo FROM reg_blob_links WHERE digest=? ORDER BY repo LIMIT ?",
                                        (digest, limit))]

    def tags_of(self, repo: str, digest: str) -> list[str]:
        with self.reading() as c:
            return self._tx(c).tags_of(repo, digest)

    def count_uploads(self) -> int:
        return self._first("SELECT count(*) FROM reg_uploads")[0]

    def upload_ids(self) -> set[str]:
        with self.reading() as c:
            return self._tx(c).upload_ids()

    # -- writes ----------------------------------------------------------------------------------------------------
    def link_blob(self, repo: str, digest: str, size: int, still_there: Callable[[], bool],
                  guard: Guard | None = None) -> bool:
        now = time.time()
        with self.writing(exclude_gc=True) as c:
            if not still_there():
                return False
            if guard is not None:
                guard(self._tx(c))
            _ensure_repo(c, repo, now)
            _link(c, repo, digest, size, now)
        return True

    def unlink_blob(self, repo: str, digest: str) -> bool:
        return self._count("DELETE FROM reg_blob_links WHERE repo=? AND digest=?", (repo, digest)) > 0

    def put_manifest(self, m: NewManifest, tags: list[str], place: Callable[[], Any], guard: Guard | None = None,
                     require_refs: bool = True) -> list[str]:
        now = time.time()
        with self.writing(exclude_gc=True) as c:
            tx = self._tx(c)
            missing = tx.missing_refs(m.repo, m.refs) if require_refs else []
            if missing:
                return missing
            if guard is not None:
                guard(tx)
            place()
            _ensure_repo(c, m.repo, now)
            c.execute(
                "INSERT INTO reg_manifests(repo, digest, media_type, size, subject, artifact_type, annotations, added) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, digest) DO UPDATE SET added=excluded.added",
                (m.repo, m.digest, m.media_type, m.size, m.subject, m.artifact_type,
                 json.dumps(m.annotations, sort_keys=True) if m.annotations else None, now))
            # in one order everywhere: two transactions writing the same rows never wait on each other in a circle
            c.executemany("INSERT INTO reg_manifest_refs(manifest, ref, kind) VALUES(?, ?, ?) "
                          "ON CONFLICT(manifest, ref) DO NOTHING", [(m.digest, d, k) for d, k in sorted(m.refs)])
            _link(c, m.repo, m.digest, m.size, now)
            for tag in sorted(set(tags)):
                _upsert_tag(c, m.repo, tag, m.digest, now)
        return []

    def set_tag(self, repo: str, tag: str, digest: str) -> bool:
        with self.writing(exclude_gc=True) as c:
            if c.execute("SELECT 1 FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest)).fetchone() is None:
                return False
            _upsert_tag(c, repo, tag, digest, time.time())
        return True

    def delete_tag(self, repo: str, tag: str) -> bool:
        return self._count("DELETE FROM reg_tags WHERE repo=? AND tag=?", (repo, tag)) > 0

    def delete_manifest(self, repo: str, digest: str, guard: Guard | None = None) -> bool:
        with self.writing(exclude_gc=True) as c:
            if guard is not None:
                guard(self._tx(c))
            n = c.execute("DELETE FROM reg_manifests WHERE repo=? AND digest=?", (repo, digest)).rowcount
            if not n:
                return False
            c.execute("DELETE FROM reg_tags WHERE repo=? AND digest=?", (repo, digest))
            c.execute("DELETE FROM reg_blob_links WHERE repo=? AND digest=?", (repo, digest))
        return True

    def new_upload(self, upload_id: str, repo: str) -> None:
        now = time.time()
        self._count("INSERT INTO reg_uploads(id, repo, started, updated) VALUES(?, ?, ?, ?)",
                    (upload_id, repo, now, now), exclude_gc=False)

    def touch_upload(self, upload_id: str) -> None:
        self._count("UPDATE reg_uploads SET updated=? WHERE id=?", (time.time(), upload_id), exclude_gc=False)

    def delete_upload(self, upload_id: str) -> None:
        self._count("DELETE FROM reg_uploads WHERE id=?", (upload_id,), exclude_gc=False)

    def finish_upload(self, upload_id: str | None, repo: str, digest: str, size: int, place: Callable[[], Any],
                      guard: Guard | None = None) -> None:
        now = time.time()
        with self.writing(exclude_gc=True) as c:
            if guard is not None:
                guard(self._tx(c))
            place()
            _ensure_repo(c, repo, now)
            _link(c, repo, digest, size, now)
            c.execute("DELETE FROM reg_uploads WHERE id=?", (upload_id,))

    # -- views --------------------------------------------------------------------------------------------------------
    def stats(self) -> RegistryStats:
        with self.reading() as c:
            def one(sql: str) -> Any:
                return c.execute(sql).fetchone()
            blobs, size = one("SELECT count(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM "
                              "(SELECT MAX(size) AS size FROM reg_blob_links GROUP BY digest) AS u")
            runs, freed = one("SELECT count(*), CAST(COALESCE(SUM(bytes_freed), 0) AS BIGINT) FROM reg_gc_runs")
            last = one("SELECT finished, seconds, blobs_removed, bytes_freed, manifests_removed, tags_removed, "
                       "runner FROM reg_gc_runs ORDER BY id DESC LIMIT 1")
            return RegistryStats(
                repositories=one("SELECT count(*) FROM reg_repositories")[0],
                tags=one("SELECT count(*) FROM reg_tags")[0], manifests=one("SELECT count(*) FROM reg_manifests")[0],
                blobs=blobs, bytes=size, uploads=one("SELECT count(*) FROM reg_uploads")[0], gc_runs=runs,
                gc_bytes_freed=freed, last_gc=GCRun(*last) if last is not None else None)

    def _figures(self) -> str:
        return _FIGURES.format(greatest=self.GREATEST)

    def repository_page(self, visible: Visible, needle: str, sort: str, descending: bool,
                        page: Callable[[int], tuple[int, int]]) -> tuple[list[RepoRow], int]:
        with self.reading() as c:
            where: list[str] = []
            params: list[Any] = []
            if needle:
                where.append(self.CONTAINS.format(column="r.name"))
                params.append(needle.lower())
            if visible is not None:
                clause, more = self.visible_where(c, visible, "r.name")
                where.append(clause)
                params += more
            sql_where = (" WHERE " + " AND ".join(where)) if where else ""
            total = c.execute(f"SELECT count(*) FROM reg_repositories r{sql_where}", params).fetchone()[0]
            limit, offset = page(total)
            order = f"{REPO_SORTS.get(sort, 'r.name')} {'DESC' if descending else 'ASC'}"
            rows = c.execute(f"SELECT {self._figures()} FROM reg_repositories r{sql_where} ORDER BY {order}, r.name "
                             "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [RepoRow(r[0], r[1], r[2], r[3] or None) for r in rows], total

    def repository_figures(self, name: str) -> RepoRow | None:
        r = self._first(f"SELECT {self._figures()} FROM reg_repositories r WHERE r.name=?", (name,))
        return None if r is None else RepoRow(r[0], r[1], r[2], r[3] or None)

    def tag_page(self, repo: str, needle: str, sort: str, descending: bool,
                 page: Callable[[int], tuple[int, int]]) -> tuple[list[TagRow], int]:
        where = ["t.repo=?"]
        params: list[Any] = [repo]
        if needle:
            where.append(self.CONTAINS.format(column="t.tag"))
            params.append(needle.lower())
        sql_where = " WHERE " + " AND ".join(where)
        with self.reading() as c:
            total = c.execute(f"SELECT count(*) FROM reg_tags t{sql_where}", params).fetchone()[0]
            limit, offset = page(total)
            order = f"{TAG_SORTS.get(sort, 't.tag')} {'DESC' if descending else 'ASC'}"
            rows = c.execute(
                "SELECT t.tag, t.digest, m.media_type, m.size, t.updated FROM reg_tags t JOIN reg_manifests m"
                f" ON m.repo=t.repo AND m.digest=t.digest{sql_where} ORDER BY {order}, t.tag LIMIT ? OFFSET ?",
                [*params, limit, offset]).fetchall()
        return [TagRow(*r) for r in rows], total

    def recent_uploads(self, limit: int) -> list[UploadRow]:
        return [UploadRow(*r) for r in self._all("SELECT id, repo, started, updated FROM reg_uploads "
                                                 "ORDER BY updated DESC LIMIT ?", (limit,))]
