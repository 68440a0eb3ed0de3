"""The notification queue: one SQLite file in the registry root
(`notifications.db`), so events wait there across restarts (kill -9
included) until their endpoint has taken them.

One thread owns the connection and runs every operation in the order it was
asked for: the event loop only hands work over (`put` never waits), so a
slow disk never holds up a request, and a delivery that reads the queue after
an event was put sees it. A row is one event for one endpoint; rows leave
the queue when the endpoint acknowledged them.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

log = logging.getLogger("soko.registry")
T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    queued REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_endpoint ON queue(endpoint, seq);
"""


class NotificationQueue:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="soko-notify-queue")
        self._conn: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()  # at startup: a broken file stops the server here

    def _open(self) -> None:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")  # a commit survives kill -9 (not a power cut)
        c.executescript(SCHEMA)
        self._conn = c

    # -- from the event loop -----------------------------------------------------------------------
    def put(self, rows: Iterable[tuple[str, str]]) -> None:
        """Queue (endpoint, event JSON) rows, in order; returns at once."""
        rows = list(rows)
        if rows:
            self._pool.submit(self._insert, rows)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def head(self, endpoint: str, limit: int) -> list[tuple[int, str]]:
        """The oldest `limit` rows of `endpoint`: (seq, body)."""
        return await self._run(self._head, endpoint, limit)

    async def ack(self, endpoint: str, last_seq: int) -> None:
        """`endpoint` has taken everything up to `last_seq`."""
        await self._run(self._delete, endpoint, last_seq)

    async def keep_only(self, endpoints: set[str]) -> int:
        """Drop the rows of endpoints no longer configured; returns how many went."""
        return await self._run(self._keep_only, endpoints)

    def close(self) -> None:
        """Write what was put, then close (the server is stopping)."""
        self._pool.submit(self._close)
        self._pool.shutdown(wait=True)

    # -- in the queue's thread ------------------------------------------------------------------------
    def _insert(self, rows: list[tuple[str, str]]) -> None:
        now = time.time()
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT INTO queue(endpoint, body, queued) VALUES(?, ?, ?)",
                                       [(e, b, now) for e, b in rows])
        except sqlite3.Error as e:  # nowhere to report to but the log: the request was answered
            log.error("notification queue %s: %d event(s) lost: %s", self.path, len(rows), e)

    def _head(self, endpoint: str, limit: int) -> list[tuple[int, str]]:
        return self._conn.execute("SELECT seq, body FROM queue WHERE endpoint=? ORDER BY seq LIMIT ?",
                                  (endpoint, limit)).fetchall()

    def _delete(self, endpoint: str, last_seq: int) -> None:
        self._conn.execute("DELETE FROM queue WHERE endpoint=? AND seq<=?", (endpoint, last_seq))

    def _keep_only(self, endpoints: set[str]) -> int:
        marks = ",".join("?" * len(endpoints))
        return self._conn.execute(f"DELETE FROM queue WHERE endpoint NOT IN ({marks})", tuple(endpoints)).rowcount

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
