"""The registry's state: one content store (the directory under the root, or
S3) and one metadata database under a root directory, a thread pool for
everything that may block, and a cache of manifest bytes (immutable, keyed by
digest, so it never goes stale)."""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar

from storage.content import ContentStore, open_store
from storage.errors import BlobNotFound
from storage.metadata import MetadataDB
from storage.private import open_root as private_root

from ..errors import APIError
from .config import ServerConfig
from .meta import RegistryDB
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
              direct_io: bool = False) -> tuple[ContentStore, RegistryDB]:
    """The content store and registry tables of a registry root (created if new)."""
    path = Path(root)
    private_root(path)
    return open_content(path, storage, executor, direct_io), RegistryDB(MetadataDB(path / "metadata.db"))


class Registry:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.root = Path(config.root)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="soko-registry")
        self.store, self.meta = open_root(self.root, config.storage, self.pool, config.direct_io)
        self.manifests = ManifestCache()

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
        self.meta.db.close()
