"""The directory content store: BlobStore's layout (`blobs/<alg>/<encoded>`,
`ingest/upload-<ref>`) behind the content-store interface.

Everything here blocks on the disk, so the async methods run the plain ones in
an executor (the registry hands in its thread pool); `blocking` is the plain
ones themselves. Blobs have a local path: the registry sends them with sendfile.
An ingest is busy while a writer holds its shared flock (dirwriter.py).
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from .. import digests
from ..blobs import BlobStore
from ..errors import BlobNotFound
from .base import Blocking, ContentStore, Info, IngestInfo, check_ref
from .dirwriter import FileWriter, Parked, ingest_path, unlink_unless_busy

T = TypeVar("T")
_UPLOAD = "upload-"


class DirectoryBlocking(Blocking):
    def __init__(self, blobs: BlobStore):
        self.blobs = blobs

    def stat(self, digest: str) -> Info | None:
        st = self.blobs.stat(digest)
        return None if st is None else Info(digest, st.st_size, st.st_mtime)

    def has(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def read_bytes(self, digest: str) -> bytes:
        return self.blobs.read_bytes(digest)

    def delete(self, digest: str) -> bool:
        return self.blobs.delete(digest)

    def delete_many(self, digests_: list[str]) -> None:
        for d in digests_:
            self.blobs.delete(d)

    def walk(self) -> Iterator[Info]:
        for digest in self.blobs:
            info = self.stat(digest)
            if info is not None:
                yield info

    def _info(self, path: Path, with_offset: bool) -> IngestInfo | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        busy = not unlink_unless_busy(path, unlink=False)
        return IngestInfo(path.name[len(_UPLOAD):], st.st_mtime, busy, st.st_size if with_offset else None)

    def ingest(self, ref: str) -> IngestInfo | None:
        return self._info(ingest_path(self.blobs, ref), True)

    def ingests(self) -> list[IngestInfo]:
        out = []
        for entry in os.scandir(self.blobs.ingest_dir):
            if entry.name.startswith(_UPLOAD) and entry.is_file(follow_symlinks=False):
                info = self._info(Path(entry.path), False)
                if info is not None:
                    out.append(info)
        return out

    def abort_ingest(self, ref: str, force: bool = False) -> bool:
        path = ingest_path(self.blobs, ref)
        if force:
            path.unlink(missing_ok=True)
            return True
        return unlink_unless_busy(path)


class DirectoryStore(ContentStore):
    name = "directory"

    def __init__(self, root: str | os.PathLike | BlobStore, executor: Executor | None = None, direct_io: bool = False):
        self.blobs = root if isinstance(root, BlobStore) else BlobStore(root)
        self.executor = executor
        self.direct_io = direct_io
        self._blocking = DirectoryBlocking(self.blobs)

    def describe(self) -> str:
        return f"directory {self.blobs.root}"

    @property
    def blocking(self) -> DirectoryBlocking:
        return self._blocking

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    # -- provider -------------------------------------------------------------------------------
    async def stat(self, digest: str) -> Info | None:
        return await self._run(self._blocking.stat, digest)

    async def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            f = await self._run(open, self.blobs.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        try:
            remaining = length
            pos = offset
            while remaining is None or remaining > 0:
                n = digests.CHUNK if remaining is None else min(digests.CHUNK, remaining)
                chunk = await self._run(os.pread, f.fileno(), n, pos)
                if not chunk:
                    break
                pos += len(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def read_bytes(self, digest: str) -> bytes:
        return await self._run(self._blocking.read_bytes, digest)

    def local_path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    async def put(self, data: bytes, expected: str) -> Info:
        return await self._run(self.put_sync, data, expected)

    def put_sync(self, data: bytes, expected: str) -> Info:
        w = self.writer_sync(None, digests.parse(expected).algorithm)
        try:
            w.write(data)
            return w.commit_sync(len(data), expected)
        finally:
            if not w.closed:
                w.abort_sync()

    # -- ingester --------------------------------------------------------------------------------
    def writer_sync(self, ref: str | None = None, algorithm: str = "sha256", resume: Parked | None = None,
                    direct: bool | None = None) -> FileWriter:
        """The writer itself, for a caller in a worker thread (the client's downloads)."""
        return FileWriter(self.blobs, ref, algorithm, self.direct_io if direct is None else direct, resume,
                          self.executor)

    async def writer(self, ref: str | None = None, algorithm: str = "sha256", resume: Any = None) -> FileWriter:
        return await self._run(self.writer_sync, ref and check_ref(ref), algorithm, resume)

    async def ingest(self, ref: str) -> IngestInfo | None:
        return await self._run(self._blocking.ingest, ref)

    async def ingests(self) -> list[IngestInfo]:
        return await self._run(self._blocking.ingests)

    async def abort_ingest(self, ref: str, force: bool = False) -> bool:
        return await self._run(self._blocking.abort_ingest, ref, force)

    # -- manager ---------------------------------------------------------------------------------
    async def delete(self, digest: str) -> bool:
        return await self._run(self.blobs.delete, digest)

    async def walk(self) -> AsyncIterator[Info]:
        for info in await self._run(lambda: list(self._blocking.walk())):
            yield info
