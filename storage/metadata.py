"""Facts about blobs, in one SQLite database per store (WAL mode).

Blobs stay on disk; only facts about them live here. Each component owns its
tables and registers its own list of migrations under a name (`storage`,
`runtime`, `builder`, `registry`); `schema_versions` records how far each has
been migrated, so components evolve their schema independently and an old
soko refuses a database made by a newer one instead of corrupting it.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

from .errors import MetadataError
from .private import private_dir

Migration = Union[str, Callable[[sqlite3.Connection], None]]

STORAGE_MIGRATIONS: list[Migration] = [
    # 1: local images, tags, layer facts, known source repositories, and
    # `holds`: blobs another component keeps alive (build cache, ...), so
    # garbage collection needs no knowledge of those components.
    """
    CREATE TABLE images (
        manifest_digest TEXT PRIMARY KEY,
        config_digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        created TEXT,
        added REAL NOT NULL
    );
    CREATE INDEX images_config ON images(config_digest);
    CREATE TABLE tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        manifest_digest TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (name, tag)
    );
    CREATE INDEX tags_manifest ON tags(manifest_digest);
    CREATE TABLE repo_digests (
        name TEXT NOT NULL,
        manifest_digest TEXT NOT NULL,
        PRIMARY KEY (name, manifest_digest)
    );
    CREATE TABLE indexes (
        index_digest TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        added REAL NOT NULL
    );
    CREATE TABLE layers (
        diff_id TEXT NOT NULL,
        blob_digest TEXT NOT NULL,
        compression TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (diff_id, blob_digest)
    );
    CREATE INDEX layers_blob ON layers(blob_digest);
    CREATE TABLE layer_sources (
        blob_digest TEXT NOT NULL,
        registry TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (blob_digest, registry, repository)
    );
    CREATE TABLE holds (
        owner TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (owner, digest)
    );
    CREATE INDEX holds_digest ON holds(digest);
    """,
]


SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006


def no_checkpoint_on_close(c: sqlite3.Connection, path: Path) -> None:
    """Leave the WAL as it is when the connection closes.

    By default the last connection to close checkpoints the WAL into the database and deletes
    it: two fsyncs at the end of every soko command, and the next one recreates the WAL (an
    fsync of the file and one of the directory). On this project's shared disks that was 10-20
    ms per command. Left alone, the WAL is checkpointed as it grows (every 1000 pages), and a
    commit is exactly as durable as before (synchronous=NORMAL: durable at the next checkpoint).
    Python 3.12 has Connection.setconfig; 3.11 reaches the same sqlite3_db_config through
    ctypes, only when the handle found is verifiably this connection's."""
    setconfig = getattr(c, "setconfig", None)
    if setconfig is not None:
        setconfig(SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
        return
    try:
        import ctypes

        lib = _libsqlite3()
        handle = ctypes.c_void_p.from_address(id(c) + object.__basicsize__).value  # pysqlite_Connection.db
        if not handle or lib.sqlite3_db_filename(handle, b"main") != os.fsencode(os.path.realpath(path)):
            return
        done = ctypes.c_int(0)
        lib.sqlite3_db_config(ctypes.c_void_p(handle), ctypes.c_int(SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE),
                              ctypes.c_int(1), ctypes.byref(done))
    except (OSError, AttributeError, ValueError):
        return  # a Python or SQLite this does not know: checkpoints on close, as before


_LIB: list = []


def _libsqlite3():
    """SQLite's functions as Python's own _sqlite3 module has them linked (the same loaded copy:
    symbols are looked up through the extension module and what it depends on)."""
    if not _LIB:
        import ctypes

        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _LIB.append(lib)
    return _LIB[0]


def close_all() -> None:
    """Close this thread's connection of every MetadataDB in the process; each opens a new one
    when next used. For a process about to fork a child that lives on (runtime's monitor): SQLite
    keeps per-process state about every open database file, which a child must not inherit and
    then use. Called with no other thread running, this leaves no connection open."""
    for db in list(_OPEN):
        db.close()


class MetadataDB:
    """A thread-safe handle: one SQLite connection per thread, WAL journal."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _OPEN.add(self)
        private_dir(self.path.parent)
        self._local = threading.local()
        self._migrated: set[str] = set()
        self._lock = threading.Lock()
        with self.transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        self.migrate("storage", STORAGE_MIGRATIONS)

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA synchronous=NORMAL")
                c.execute("PRAGMA foreign_keys=ON")
                no_checkpoint_on_close(c, self.path)
            except sqlite3.DatabaseError as e:
                raise MetadataError(f"metadata database {self.path}: {e}") from None
            c.row_factory = sqlite3.Row
            self._local.conn = c
        return c

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers are serialized, readers are not blocked."""
        c = self.conn
        if c.in_transaction:  # nested: join the outer transaction
            yield c
            return
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def migrate(self, component: str, migrations: Sequence[Migration]) -> None:
        """Bring `component`'s tables up to date; idempotent and cheap once done."""
        if component in self._migrated:
            return
        with self._lock, self.transaction() as c:
            row = c.execute("SELECT version FROM schema_versions WHERE component=?", (component,)).fetchone()
            current = row[0] if row else 0
            if current > len(migrations):
                raise MetadataError(f"{self.path}: {component} schema version {current} is newer than this soko "
                                    f"understands ({len(migrations)})")
            for step in migrations[current:]:
                if callable(step):
                    step(c)
                else:
                    for stmt in (s.strip() for s in step.split(";")):
                        if stmt:
                            c.execute(stmt)
            if current < len(migrations):
                c.execute("INSERT INTO schema_versions(component, version) VALUES(?, ?) "
                          "ON CONFLICT(component) DO UPDATE SET version=excluded.version",
                          (component, len(migrations)))
        self._migrated.add(component)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the row count."""
        with self.transaction() as c:
            return c.execute(sql, params).rowcount

    def close(self) -> None:
        """This thread's connection closed; the next use opens another."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


_OPEN: "weakref.WeakSet[MetadataDB]" = weakref.WeakSet()  # every MetadataDB alive, for close_all
