#!/usr/bin/env python3
"""Which PostgreSQL driver for the registry's metadata: psycopg 3 or asyncpg.

The registry's metadata calls are synchronous and run in its worker threads
(writes hold a transaction around file work and policy guards; gc and the UI
are long synchronous functions); only the cheap point reads of the hot paths
(manifest by tag, blob link size) ran on the event loop, which SQLite allows
and a network round-trip does not. So the question is what a point read
costs from aiohttp's event loop, 64 at a time, each way:

  psycopg-thread  psycopg 3 (sync, C build), one connection per worker thread, via run_in_executor
  psycopg-async   psycopg 3 AsyncConnection, a pool of connections, on the loop
  asyncpg         asyncpg pool, on the loop
  sqlite-inline   today's SQLite point read on the loop (the baseline)

and what a write transaction (advisory lock + upsert) costs from a worker thread.
Usage: python bench/bench_pg_drivers.py [--seconds 3] (asyncpg is not a dependency: pip install
asyncpg into the venv to run it)
"""
from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pgserver import PostgresServer  # noqa: E402

CONCURRENCY = 64
SETUP = ["CREATE TABLE t (repo TEXT, tag TEXT, digest TEXT, PRIMARY KEY (repo, tag))",
         "INSERT INTO t SELECT 'r' || (i % 100), 'v' || i, 'sha256:' || md5(i::text) FROM generate_series(1, 10000) i"]


async def drive(read, seconds: float) -> float:
    """Point reads per second with CONCURRENCY concurrent callers."""
    done = 0
    stop = time.monotonic() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        n = i
        while time.monotonic() < stop:
            n += 1
            await read(f"r{n % 100}", f"v{n % 10000 + 1}")
            done += 1
    start = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
    return done / (time.monotonic() - start)


def psycopg_thread(url: str, seconds: float) -> float:
    import psycopg

    local = threading.local()
    pool = ThreadPoolExecutor(8)

    def read(repo: str, tag: str):
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = psycopg.connect(url, autocommit=True)
        return c.execute("SELECT digest FROM t WHERE repo=%s AND tag=%s", (repo, tag)).fetchone()

    async def go() -> float:
        loop = asyncio.get_running_loop()
        return await drive(lambda r, t: loop.run_in_executor(pool, read, r, t), seconds)
    return asyncio.run(go())


def psycopg_async(url: str, seconds: float) -> float:
    import psycopg

    async def go() -> float:
        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(8)]
        free: asyncio.Queue = asyncio.Queue()
        for c in conns:
            free.put_nowait(c)

        async def read(repo: str, tag: str):
            c = await free.get()
            try:
                cur = await c.execute("SELECT digest FROM t WHERE repo=%s AND tag=%s", (repo, tag))
                return await cur.fetchone()
            finally:
                free.put_nowait(c)
        return await drive(read, seconds)
    return asyncio.run(go())


def asyncpg_pool(url: str, seconds: float) -> float:
    import asyncpg

    async def go() -> float:
        pool = await asyncpg.create_pool(url, min_size=8, max_size=8)

        async def read(repo: str, tag: str):
            return await pool.fetchrow("SELECT digest FROM t WHERE repo=$1 AND tag=$2", repo, tag)
        try:
            return await drive(read, seconds)
        finally:
            await pool.close()
    return asyncio.run(go())


def sqlite_inline(path: str, seconds: float) -> float:
    c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")

    async def read(repo: str, tag: str):
        return c.execute("SELECT digest FROM t WHERE repo=? AND tag=?", (repo, tag)).fetchone()
    return asyncio.run(drive(read, seconds))


def psycopg_writes(url: str, seconds: float) -> float:
    """Write transactions per second from 8 threads: shared advisory lock, then an upsert."""
    import psycopg

    stop = time.monotonic() + seconds
    counts = [0] * 8

    def worker(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as c:
            n = 0
            while time.monotonic() < stop:
                n += 1
                with c.transaction():
                    c.execute("SELECT pg_advisory_xact_lock_shared(42)")
                    c.execute("INSERT INTO t(repo, tag, digest) VALUES(%s, %s, 'x') ON CONFLICT(repo, tag) "
                              "DO UPDATE SET digest=excluded.digest", (f"w{i}", f"t{n % 50}"))
                counts[i] += 1
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    return sum(counts) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    pg = PostgresServer()
    try:
        url = pg.database()
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            for s in SETUP:
                c.execute(s)
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "t.db")
            with sqlite3.connect(db) as c:
                c.execute("CREATE TABLE t (repo TEXT, tag TEXT, digest TEXT, PRIMARY KEY (repo, tag))")
                c.executemany("INSERT INTO t VALUES(?, ?, ?)",
                              [(f"r{i % 100}", f"v{i}", f"sha256:{i}") for i in range(1, 10001)])
            rows = [("sqlite-inline", sqlite_inline(db, args.seconds))]
        rows += [("psycopg-thread", psycopg_thread(url, args.seconds)),
                 ("psycopg-async", psycopg_async(url, args.seconds)),
                 ("asyncpg", asyncpg_pool(url, args.seconds)),
                 ("psycopg-writes (tx/s, 8 threads)", psycopg_writes(url, args.seconds))]
        for name, rate in rows:
            print(f"{name:34s} {rate:10,.0f} /s")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
