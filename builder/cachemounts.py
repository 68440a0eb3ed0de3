"""`RUN --mount=type=cache` directories: kept in the store between builds, never in a layer.

Each cache is a directory under `<store>/builder/cache-mounts/`, named by a
digest of its id and its base (`from=`/`source=`, as BuildKit keys a cache by
id and base), recorded in `builder_cache_mounts` (SQLite) for listing and
pruning. Sharing is enforced with flock on a lock file beside the directory,
so it holds across processes (two `soko build` at once):

- `shared`: a shared lock; any number of steps use the directory together;
- `locked`: an exclusive lock; a second step waits until the first is done;
- `private`: an exclusive lock taken without waiting; when it is busy the
  step uses (or creates) the next instance of that cache, `<name>-1`, ...

Prune takes each lock exclusively without waiting, so a cache in use is never
removed under a running step.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from storage.private import private_dir

MIGRATIONS = [
    """
    CREATE TABLE builder_cache_mounts (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL,
        base TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL NOT NULL
    );
    """,
]


@dataclass
class CacheMount:
    name: str          # directory name under the cache-mounts root
    id: str
    base: str
    created: float
    last_used: float
    size: int = 0


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total


class CacheMounts:
    def __init__(self, store):
        self.store = store
        self.root = Path(store.root) / "builder" / "cache-mounts"
        store.db.migrate("builder_cache_mounts", MIGRATIONS)

    @contextmanager
    def use(self, ident: str, base: str, sharing: str, mode: int, uid: int, gid: int,
            seed: Callable[[Path], None] | None = None) -> Iterator[Path]:
        """The directory of cache `ident` on `base`, locked as `sharing` says while the block runs.
        A new one is created `mode`, `uid`:`gid`, filled by `seed` (the `from=` content) first."""
        private_dir(self.root)
        stem = hashlib.sha256(f"{ident}\0{base}".encode()).hexdigest()[:32]
        n = 0
        while True:
            name = stem if n == 0 else f"{stem}-{n}"
            lock = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if sharing == "private":
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.flock(lock, fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX)
            except BlockingIOError:
                os.close(lock)
                n += 1
                continue
            break
        try:
            path = self.root / name
            if not path.is_dir():
                self._create(path, mode, uid, gid, seed)
            now = time.time()
            self.store.db.execute(
                "INSERT INTO builder_cache_mounts(name, id, base, created, last_used) VALUES(?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET last_used=excluded.last_used", (name, ident, base, now, now))
            yield path
        finally:
            os.close(lock)  # releases the flock

    def _create(self, path: Path, mode: int, uid: int, gid: int, seed: Callable[[Path], None] | None) -> None:
        tmp = path.with_name(path.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp, 0o700)
        if seed is not None:
            seed(tmp)
        else:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.rename(tmp, path)

    def list(self) -> list[CacheMount]:
        rows = self.store.db.query("SELECT name, id, base, created, last_used FROM builder_cache_mounts "
                                   "ORDER BY last_used")
        return [CacheMount(*r, size=dir_size(self.root / r[0])) for r in rows]

    def prune(self, older_than: float | None = None) -> list[CacheMount]:
        """Remove caches unused for `older_than` seconds (all when None) that no step is using now."""
        cutoff = time.time() - older_than if older_than is not None else float("inf")
        removed = []
        for m in self.list():
            if m.last_used >= cutoff:
                continue
            lock_path = self.root / f"{m.name}.lock"
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use by a running step
                shutil.rmtree(self.root / m.name, ignore_errors=True)
                self.store.db.execute("DELETE FROM builder_cache_mounts WHERE name=?", (m.name,))
                lock_path.unlink(missing_ok=True)
                removed.append(m)
            finally:
                os.close(lock)
        return removed
