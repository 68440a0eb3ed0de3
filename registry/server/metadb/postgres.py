"""The registry's metadata in PostgreSQL (`--metadata postgresql://USER@HOST:PORT/DB`):
any number of `soko serve` processes share it.

psycopg 3, synchronous, one connection per worker thread: every metadata
call already runs in the registry's worker threads (pyproject.toml says why
not asyncpg). Reads are single autocommit statements (READ COMMITTED);
writes are transactions whose consistency comes from locks, not from a
stricter isolation level, so nothing ever has to be retried:

- every transaction that makes something reachable or deletes it (links,
  manifests, tags) first takes the gc lock *shared*; garbage collection's
  transactions take it *exclusive*. They never overlap, exactly as SQLite's
  single writer orders them, while pushes run side by side. Each transaction
  takes it in its first statement, so under READ COMMITTED everything it
  reads afterwards includes what the other side committed.
- a guard locks what it checks (`Tx.lock`): the quota of a namespace, the
  tags of a repository, so two pushes racing for the last bytes of a quota
  or for an immutable tag run one after the other;
- one collector at a time: a session advisory lock, tried, never waited for
  (a replica that does not get it skips its turn); it dies with its
  connection, so a killed replica never holds it.

registry/METADATA.md has the whole protocol.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from ...errors import RegistryError
from ..meta import GCTx, Pin, Visible
from .pgpins import PinHolder, announce
from .schema import POSTGRES, render, statements
from .sql import SQLMeta

MIGRATIONS = render(POSTGRES)
LOCK_CLASS = 0x736F6B6F  # "soko": the first key of our two-key advisory locks
GC_RUN = 1  # session lock: one collector at a time
GC_EXCLUDE = 2  # transaction lock: shared by writers, exclusive by gc
MIGRATE = 3  # transaction lock: one process migrates
GC_PIN = 4  # session lock: each process's pins, counted, hold it shared (pgpins.py); gc's transactions take it exclusively first


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (no statement of ours holds a literal % or ?)."""
    return sql.replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _Conn:
    """A psycopg connection that speaks the `?` style of sql.py."""

    def __init__(self, c: Any):
        self.c = c

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.c.execute(_pg_sql(sql), params)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = list(seq)
        if rows:
            with self.c.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)


class PostgresMeta(SQLMeta):
    inline_reads = False  # a round trip: off the event loop
    CONTAINS = "strpos(lower({column}), ?) > 0"
    GREATEST = "GREATEST"

    def __init__(self, url: str):
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.where = redact(url)
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._pins = PinHolder(self._connect, (LOCK_CLASS, GC_PIN))
        self._migrate()

    def _conn(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None or c.closed or c.broken:  # a broken connection is replaced on the next call
            c = self._local.conn = self._connect()
        return c

    def _connect(self) -> Any:
        try:
            c = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="soko-registry")
        except self._psycopg.Error as e:
            raise RegistryError(f"metadata {self.where}: {str(e).strip().splitlines()[0]}") from None
        with self._conns_lock:
            self._conns = [x for x in self._conns if not x.closed] + [c]
        return c

    def _migrate(self) -> None:
        c = self._conn()
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATE))
            c.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, "
                      "version INTEGER NOT NULL)")
            row = c.execute("SELECT version FROM schema_versions WHERE component='registry'").fetchone()
            current = row[0] if row else 0
            if current > len(MIGRATIONS):
                raise RegistryError(f"metadata {self.where}: registry schema version {current} is newer than this "
                                    f"soko understands ({len(MIGRATIONS)})")
            for step in MIGRATIONS[current:]:
                for stmt in statements(step):
                    c.execute(stmt)
            if current < len(MIGRATIONS):
                c.execute("INSERT INTO schema_versions(component, version) VALUES('registry', %s) "
                          "ON CONFLICT(component) DO UPDATE SET version=excluded.version", (len(MIGRATIONS),))

    @contextmanager
    def reading(self) -> Iterator[_Conn]:
        yield _Conn(self._conn())

    @contextmanager
    def writing(self, exclude_gc: bool) -> Iterator[_Conn]:
        c = self._conn()
        with c.transaction():
            if exclude_gc:
                c.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (LOCK_CLASS, GC_EXCLUDE))
            yield _Conn(c)

    def lock_key(self, c: _Conn, key: str) -> None:
        c.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def visible_where(self, c: _Conn, visible: Visible, column: str) -> tuple[str, list[Any]]:
        # No Python in the server: the names the viewer may see, as an array the query matches
        names = [r[0] for r in c.execute("SELECT name FROM reg_repositories") if visible(r[0])]
        return f"{column} = ANY(?)", [names]

    @contextmanager
    def gc_run(self) -> Iterator[bool]:
        c = self._conn()
        got = c.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, GC_RUN)).fetchone()[0]
        try:
            yield got
        finally:
            if got and not c.closed and not c.broken:
                c.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, GC_RUN))

    @contextmanager
    def gc_transaction(self, commit: bool = True) -> Iterator[GCTx]:
        c = self._conn()
        announce(c)  # at once (autocommit): pin holders look for this collector waiting
        with c.transaction(force_rollback=not commit):
            # pins first: a pinned push may still need GC_EXCLUDE (shared) to link what it committed
            c.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, GC_PIN))
            c.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, GC_EXCLUDE))
            yield self._tx(_Conn(c))

    def pin(self) -> Pin:
        return self._pins.pin()

    def close(self) -> None:
        self._pins.close()
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()
        self._local = threading.local()

