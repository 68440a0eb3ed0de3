"""Content stores: one interface (base.py), a directory and an S3 implementation."""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Iterator

from ..errors import StorageError
from .base import Blocking, ContentStore, Info, IngestInfo, Writer, check_ref
from .directory import DirectoryStore


def open_store(spec: str | None, root: str | os.PathLike, executor: Executor | None = None, direct_io: bool = False,
               redirect: bool = False, access_key: str | None = None, secret_key: str | None = None,
               part_size: int | None = None) -> ContentStore:
    """The store `spec` names: None or "" for the directory store under `root`, or
    `s3://BUCKET/PREFIX?endpoint=...&region=...` (imported only then)."""
    if not spec:
        if redirect:
            raise StorageError("redirects need a store with URLs (s3://...)")
        return DirectoryStore(root, executor, direct_io)
    if spec.startswith("s3://"):
        from .s3 import PART, S3Store

        return S3Store(spec, access_key, secret_key, part_size=part_size or PART, redirect=redirect)
    raise StorageError(f"unknown storage {spec!r}: want s3://BUCKET/PREFIX?endpoint=...&region=... "
                       "(or nothing, for the directory under the root)")


@contextmanager
def blocking_session(store: ContentStore) -> Iterator[Blocking]:
    """`store.blocking` for a program without an event loop (`soko gc --registry`):
    the store lives on a private loop in a thread of its own meanwhile."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="soko-content-store", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(store.open(), loop).result()
        try:
            yield store.blocking
        finally:
            asyncio.run_coroutine_threadsafe(store.close(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


__all__ = ["blocking_session", "Blocking", "ContentStore", "DirectoryStore", "Info", "IngestInfo", "Writer", "check_ref", "open_store"]
