"""The registry's metadata in SQLite: `metadata.db` in the registry root (the default).

Write transactions are serialized (BEGIN IMMEDIATE, and first a lock of this
process, whose waiters wake the moment it is free instead of in SQLite's
busy handler, which sleeps and polls; other processes such as `soko gc`
still meet SQLite's own lock). Serialized writers make every guard and gc
rule hold without further locks: `Tx.lock` has nothing to do. Point reads
take microseconds, so they may run on the event loop.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from storage.errors import MetadataError
from storage.metadata import MetadataDB

from ...errors import RegistryError
from ..meta import GCTx, Visible
from .schema import SQLITE, render
from .sql import SQLMeta

MIGRATIONS = render(SQLITE)


class SQLiteMeta(SQLMeta):
    inline_reads = True

    def __init__(self, path: str | Path):
        try:
            self.db = MetadataDB(path)
            self.db.migrate("registry", MIGRATIONS)
        except MetadataError as e:  # a damaged file, or one of a newer soko: one line, before anything listens
            raise RegistryError(f"metadata {e}") from None
        self.where = str(self.db.path)
        self.write_lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        yield self.db.conn

    @contextmanager
    def writing(self, exclude_gc: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction: keep it short (no fsync inside)."""
        with self.write_lock, self.db.transaction() as c:
            yield c

    def lock_key(self, c: Any, key: str) -> None:
        pass  # writers are serialized already

    def visible_where(self, c: sqlite3.Connection, visible: Visible, column: str) -> tuple[str, list[Any]]:
        # a function of this connection: the query filters, sorts, counts and pages by itself
        c.create_function("soko_visible", 1, lambda name: 1 if visible(name) else 0, deterministic=True)
        return f"soko_visible({column})", []

    @contextmanager
    def gc_run(self) -> Iterator[bool]:
        yield True  # collectors of one root take turns in gc_transaction, as every writer does

    @contextmanager
    def gc_transaction(self, commit: bool = True) -> Iterator[GCTx]:
        c = self.db.conn
        with self.write_lock:  # this process's writers wait; readers go on
            c.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx(c)
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT" if commit else "ROLLBACK")

    def close(self) -> None:
        self.db.close()
