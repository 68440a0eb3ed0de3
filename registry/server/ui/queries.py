"""What the UI's pages read from the registry tables: one page at a time.

Every function here runs in a worker thread (Registry.run) on that thread's
own SQLite connection. Listings are filtered to what the viewer may pull
inside SQL (a function registered on the connection), so sorting, counting
and LIMIT/OFFSET happen in the query, whatever the registry's size.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Callable

from ..meta import RegistryDB, UploadRow

Visible = Callable[[str], bool] | None  # may the viewer pull this repository? None: everything
PAGE = 50

REPO_SORTS = {"name": "r.name", "tags": "tags", "size": "size", "pushed": "pushed"}
TAG_SORTS = {"name": "t.tag", "pushed": "t.updated"}


@dataclass(frozen=True)
class Page:
    number: int  # from 1
    size: int
    total: int  # matching rows

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass(frozen=True)
class RepoRow:
    name: str
    tags: int
    size: int  # bytes of the blobs and manifests linked into it
    pushed: float | None  # the newest tag or manifest push


@dataclass(frozen=True)
class TagRow:
    tag: str
    digest: str
    media_type: str
    size: int  # the manifest's own bytes
    pushed: float


# A repository's name, tag count, linked bytes and last push (each on an index range of its own)
_FIGURES = ("r.name,"
            " (SELECT count(*) FROM reg_tags t WHERE t.repo=r.name) AS tags,"
            " (SELECT COALESCE(SUM(l.size), 0) FROM reg_blob_links l WHERE l.repo=r.name) AS size,"
            " max(COALESCE((SELECT MAX(t.updated) FROM reg_tags t WHERE t.repo=r.name), 0),"
            "     COALESCE((SELECT MAX(m.added) FROM reg_manifests m WHERE m.repo=r.name), 0)) AS pushed")


def _where(conn: sqlite3.Connection, visible: Visible, column: str, needle: str,
           base: list[str], params: list) -> tuple[str, list]:
    where, params = list(base), list(params)
    if needle:
        where.append(f"instr(lower({column}), ?) > 0")
        params.append(needle.lower())
    if visible is not None:
        conn.create_function("soko_ui_visible", 1, lambda name: 1 if visible(name) else 0, deterministic=True)
        where.append("soko_ui_visible(r.name)")
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _page_of(total: int, number: int, size: int) -> Page:
    page = Page(max(1, number), size, total)
    return page if page.number <= page.count else Page(page.count, size, total)


def repositories(meta: RegistryDB, visible: Visible, needle: str, sort: str, descending: bool, number: int,
                 size: int = PAGE) -> tuple[list[RepoRow], Page]:
    """One page of the repositories the viewer may pull whose name contains `needle`."""
    conn = meta.db.conn
    where, params = _where(conn, visible, "r.name", needle, [], [])
    total = conn.execute(f"SELECT count(*) FROM reg_repositories r{where}", params).fetchone()[0]
    page = _page_of(total, number, size)
    order = f"{REPO_SORTS.get(sort, 'r.name')} {'DESC' if descending else 'ASC'}"
    rows = conn.execute(f"SELECT {_FIGURES} FROM reg_repositories r{where} ORDER BY {order}, r.name LIMIT ? OFFSET ?",
                        [*params, page.size, page.offset]).fetchall()
    return [RepoRow(r[0], r[1], r[2], r[3] or None) for r in rows], page


def repository(meta: RegistryDB, name: str) -> RepoRow | None:
    """The figures of one repository (None: there is no such repository)."""
    r = meta.db.conn.execute(f"SELECT {_FIGURES} FROM reg_repositories r WHERE r.name=?", (name,)).fetchone()
    return None if r is None else RepoRow(r[0], r[1], r[2], r[3] or None)


def tags(meta: RegistryDB, repo: str, needle: str, sort: str, descending: bool, number: int,
         size: int = PAGE) -> tuple[list[TagRow], Page]:
    """One page of a repository's tags with the manifest each names."""
    conn = meta.db.conn
    base = ["t.repo=?"]
    params: list = [repo]
    if needle:
        base.append("instr(lower(t.tag), ?) > 0")
        params.append(needle.lower())
    where = " WHERE " + " AND ".join(base)
    total = conn.execute(f"SELECT count(*) FROM reg_tags t{where}", params).fetchone()[0]
    page = _page_of(total, number, size)
    order = f"{TAG_SORTS.get(sort, 't.tag')} {'DESC' if descending else 'ASC'}"
    rows = conn.execute(
        "SELECT t.tag, t.digest, m.media_type, m.size, t.updated FROM reg_tags t JOIN reg_manifests m"
        f" ON m.repo=t.repo AND m.digest=t.digest{where} ORDER BY {order}, t.tag LIMIT ? OFFSET ?",
        [*params, page.size, page.offset]).fetchall()
    return [TagRow(*r) for r in rows], page


def tags_of(meta: RegistryDB, repo: str, digest: str) -> list[str]:
    return meta.tags_of(meta.db.conn, repo, digest)


def uploads(meta: RegistryDB, visible: Visible, limit: int = 200) -> list[UploadRow]:
    """Upload sessions not finished yet, newest activity first."""
    rows = meta.db.conn.execute("SELECT id, repo, started, updated FROM reg_uploads ORDER BY updated DESC LIMIT ?",
                                (limit,)).fetchall()
    return [UploadRow(*r) for r in rows if visible is None or visible(r[1])]
