"""The build cache: step key -> the image config after the step and the layer it added.

Keys are chained (see builder/CACHE.md): each step's key hashes its parent's
key, so a change invalidates that step and every later one, never an
earlier one. Entries live in the store's SQLite database (`builder_cache`);
the blobs of their layers are held with `store.hold`, so `soko gc` keeps
them while the entry exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from storage import digests
from storage.model import canonical_json

# Bump when the meaning of a key changes, so old entries stop matching.
KEY_VERSION = "soko-build-cache-v2"
HOLD_PREFIX = "builder-cache:"


def _family_records(c) -> None:
    """3: a COPY family keeps a record of its files (reuse.py): snapshot files need no stat-cache rows."""
    c.execute("ALTER TABLE builder_copy_family ADD COLUMN record TEXT")
    if c.execute("SELECT 1 FROM sqlite_master WHERE name='builder_file_hashes'").fetchone():
        db = next(r[2] for r in c.execute("PRAGMA database_list") if r[1] == "main")
        prefix = os.path.join(os.path.dirname(db), "snapshots") + "/"
        c.execute("DELETE FROM builder_file_hashes WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + "0"))


MIGRATIONS = [
    """
    CREATE TABLE builder_cache (
        key TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        diff_id TEXT,
        created REAL NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE INDEX builder_cache_used ON builder_cache(last_used);
    """,
    # 2: the latest result of each COPY "family" (parent + instruction), a donor of hard links
    """
    CREATE TABLE builder_copy_family (
        family TEXT PRIMARY KEY,
        chain_id TEXT NOT NULL
    );
    """,
    _family_records,
]


def key(parent: str | None, **parts: Any) -> str:
    """The key of a step: its parent's key plus what defines the step."""
    doc = {"v": KEY_VERSION, "parent": parent, **parts}
    return digests.of_bytes(canonical_json(doc))


def digest_of(records: list[str]) -> str:
    """One digest for a step's source records (sorted by the caller where order is not meaning)."""
    return hashlib.sha256("\n".join(records).encode()).hexdigest()


@dataclass
class Entry:
    """A build-cache hit: the step's key, the image config after it, and the diff_id of the layer it
    added (None: a step that adds no layer)."""

    key: str
    config: dict
    diff_id: str | None


class BuildCache:
    def __init__(self, store):
        self.store = store
        self.seen: dict[str, str | None] = {}  # key -> what this build found or wrote there (fastpath.py)
        store.db.migrate("builder", MIGRATIONS)

    def get(self, k: str) -> Entry | None:
        row = self.store.db.one("SELECT config, diff_id FROM builder_cache WHERE key=?", (k,))
        self.seen[k] = None
        if row is None:
            return None
        if row[1] is not None and not self.store.layer_blobs(row[1]):
            self.drop(k)  # its layer was collected: a miss, and forget it
            return None
        self.store.db.execute("UPDATE builder_cache SET last_used=? WHERE key=?", (time.time(), k))
        self.seen[k] = _state(row[0], row[1])
        return Entry(k, json.loads(row[0]), row[1])

    def put(self, k: str, config: dict, diff_id: str | None, blob_digests: list[str]) -> None:
        now = time.time()
        text = canonical_json(config).decode()
        with self.store.db.transaction() as c:
            c.execute("INSERT INTO builder_cache(key, config, diff_id, created, last_used) VALUES(?,?,?,?,?) "
                      "ON CONFLICT(key) DO UPDATE SET config=excluded.config, diff_id=excluded.diff_id, "
                      "last_used=excluded.last_used",
                      (k, text, diff_id, now, now))
            if blob_digests:
                self.store.hold(HOLD_PREFIX + k, blob_digests)
        self.seen[k] = _state(text, diff_id)

    def hold_more(self, k: str, blob_digests: list[str]) -> None:
        """Keep another stored form (compression) of an entry's layer alive too."""
        self.store.hold(HOLD_PREFIX + k, blob_digests)

    def drop(self, k: str) -> None:
        self.seen[k] = None
        with self.store.db.transaction() as c:
            c.execute("DELETE FROM builder_cache WHERE key=?", (k,))
        self.store.release(HOLD_PREFIX + k)

    def prune(self, older_than: float | None = None) -> int:
        """Forget entries unused for `older_than` seconds (all when None), releasing
        their layers to garbage collection. Returns how many were dropped."""
        cutoff = time.time() - older_than if older_than is not None else float("inf")
        rows = self.store.db.query("SELECT key FROM builder_cache WHERE last_used < ?", (cutoff,))
        for r in rows:
            self.drop(r[0])
        return len(rows)

    def entries(self) -> list[tuple[str, str | None, float]]:
        """(key, diff_id, last_used) of every entry, least recently used first."""
        return [(r[0], r[1], r[2]) for r in
                self.store.db.query("SELECT key, diff_id, last_used FROM builder_cache ORDER BY last_used")]

    def __len__(self) -> int:
        row = self.store.db.one("SELECT COUNT(*) FROM builder_cache")
        return int(row[0]) if row else 0


def _state(config_text: str, diff_id: str | None) -> str:
    return hashlib.sha256(f"{config_text}\0{diff_id or ''}".encode()).hexdigest()


def states(store, keys: list[str]) -> dict[str, str | None] | None:
    """What the entries of `keys` hold now, each as one digest (None: no entry), for fastpath.py: a
    build that looked these keys up would find the same only while this answer is the same. None
    when an entry's layer is gone (a lookup would drop it) or the table does not exist yet."""
    import sqlite3

    out: dict[str, str | None] = dict.fromkeys(keys)
    try:
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = store.db.query(f"SELECT key, config, diff_id FROM builder_cache WHERE key IN "
                                  f"({','.join('?' * len(part))})", part)
            for k, config, diff_id in rows:
                if diff_id is not None and not store.layer_blobs(diff_id):
                    return None
                out[k] = _state(config, diff_id)
    except sqlite3.OperationalError:
        return None
    return out


def mark_used(store, keys: list[str]) -> None:
    """A hit on each of `keys`, as lookups record it (`builder prune` keeps recently used entries)."""
    now = time.time()
    with store.db.transaction() as c:
        c.executemany("UPDATE builder_cache SET last_used=? WHERE key=?", [(now, k) for k in keys])
