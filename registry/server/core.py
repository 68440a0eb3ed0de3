"""The registry's state: one content store (the directory under the root, or
S3), its metadata (SQLite in the root, or PostgreSQL), a thread pool for
everything that may block, and a cache of manifest bytes (immutable, keyed by
digest, so it never goes stale)."""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

from storage.content import ContentStore, open_store
from storage.errors import BlobNotFound
from storage.private import open_root as private_root

from ..errors import APIError
from .config import ServerConfig
from .meta import RegistryMeta
from .metadb import open_metadata
from .sections import StorageOptions

T = TypeVar("T")
MANIFEST_CACHE_BYTES = 64 * 1024 * 1024


class ManifestCache:
    """LRU of manifest bytes by digest, bounded by total size."""

    def __init__(self, max_bytes: int = MANIFEST_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.total = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, digest: str) -> bytes | None:
        data = self._items.get(digest)
        if data is not None:
            self._items.move_to_end(digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4 or digest in self._items:
            return
        self._items[digest] = data
        self.total += len(data)
        while self.total > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.total -= len(old)


def open_content(root: str | os.PathLike, storage: StorageOptions | None = None, executor=None,
                 direct_io: bool = False) -> ContentStore:
    """The content store of a registry root: its directory, or what `storage` names."""
    opts = storage or StorageOptions()
    return open_store(opts.url, root, executor, direct_io, opts.redirect, opts.access_key, opts.secret_key,
                      opts.part_size)


def open_root(root: str | os.PathLike, storage: StorageOptions | None = None, executor=None,
              direct_io: bool = False, metadata: str | None = None) -> tuple[ContentStore, RegistryMeta]:
    """The content store of a registry root (created if new) and its metadata:
    `metadata.db` in the root, or the PostgreSQL database at the `metadata` URL."""
    path = Path(root)
    private_root(path)
    return open_content(path, storage, executor, direct_io), open_metadata(path, metadata)


class Registry:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.root = Path(config.root)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="soko-registry")
        self.store, self.meta = open_root(self.root, config.storage, self.pool, config.direct_io,
                                          config.metadata.url)
        self.manifests = ManifestCache()
        self.pin_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="soko-registry-pin")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (disk, hashing, SQLite writes) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(fn, *args, **kwargs))

    def still_there(self, digest: str) -> Callable[[], None]:
        """A check for inside a metadata transaction (worker thread): the blob a commit
        published is still stored (a collector whose grace is shorter than the time
        since may have taken it). Refuses the transaction otherwise."""
        blocking = self.store.blocking

        def check() -> None:
            if not blocking.has(digest):
                raise APIError("BLOB_UPLOAD_INVALID", f"{digest} was collected before it could be linked: "
                                                      "push it again")
        return check

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[None]:
        """Hold off garbage collection (meta.pin) while a blob is committed to the
        store and linked. The wait for a running collection happens in a thread
        of its own (not the pool's); the release is instant, on the loop."""
        taking = asyncio.get_running_loop().run_in_executor(self.pin_pool, self.meta.pin)
        try:
            pin = await asyncio.shield(taking)
        except asyncio.CancelledError:  # the thread may still get it: let go of it then
            taking.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().release())
            raise
        try:
            yield
        finally:
            pin.release()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A metadata point read: on the event loop where that costs microseconds
        (SQLite), else in a worker thread (a round trip to a database server)."""
        if self.meta.inline_reads:
            return fn(*args)
        return await self.run(fn, *args)

    async def manifest_bytes(self, digest: str, size: int) -> bytes | None:
        data = self.manifests.get(digest)
        if data is None:
            try:
                data = await self.store.read_bytes(digest)  # a miss goes to the store
            except BlobNotFound:
                return None
            self.manifests.put(digest, data)
        return data

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.pin_pool.shutdown(wait=True)
        self.meta.close()
