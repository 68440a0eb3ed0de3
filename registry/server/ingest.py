"""Upload sessions and the streaming write path.

A session is a row in SQLite plus the resumable ingest file `upload-<id>`;
its offset is what the file holds, so after a restart (even `kill -9`) the
session continues where the bytes end. Request bodies are read on the event
loop and handed in batches to two worker threads, one hashing and one writing,
while the loop already receives the next batch; at most one batch is in
flight per upload. A blob becomes visible only when the closing PUT's digest
matches: the file is then renamed into the blob store and linked into the
repository in one metadata transaction.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import StreamReader

from storage import digests

from ..errors import APIError
from .core import Registry
from .directio import DirectWriter

BATCH = 4 * 1024 * 1024  # bytes handed to the worker thread at once
IDLE_CLOSE = 300.0  # seconds after which an idle session's file is closed (reopened on demand)
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Session:
    id: str
    repo: str
    writer: DirectWriter | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False


def _hash_all(writer: DirectWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.hash(chunk)


def _store_all(writer: DirectWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.store(chunk)


class Uploads:
    def __init__(self, reg: Registry):
        self.reg = reg
        self.sessions: dict[str, Session] = {}

    async def create(self, repo: str) -> Session:
        s = Session(str(uuid.uuid4()), repo)
        await self.reg.run(self.reg.meta.new_upload, s.id, repo)
        self.sessions[s.id] = s
        return s

    def get(self, repo: str, upload_id: str) -> Session:
        """The session, if it exists and belongs to `repo` (BLOB_UPLOAD_UNKNOWN otherwise)."""
        # The row decides, not memory: garbage collection in another process
        # may have expired the session.
        row = self.reg.meta.upload(upload_id) if _ID_RE.match(upload_id) else None
        s = self.sessions.get(upload_id)
        if row is None:
            if s is not None and not s.lock.locked():
                self._forget(s)
            s = None
        elif s is None:
            s = self.sessions.setdefault(upload_id, Session(upload_id, row.repo))
        if s is None or s.repo != repo or s.closed:
            raise APIError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
        s.last_used = time.monotonic()
        return s

    def _forget(self, s: Session) -> None:
        s.closed = True
        self.sessions.pop(s.id, None)
        if s.writer is not None:
            self.reg.pool.submit(s.writer.close)
            s.writer = None

    async def writer(self, s: Session) -> DirectWriter:
        """The session's writer (hold `s.lock`); reopening re-hashes what is on disk."""
        if s.closed:
            raise APIError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": s.id})
        if s.writer is None:
            s.writer = await self.reg.run(self.open_writer, s.id)
        return s.writer

    def open_writer(self, upload_id: str) -> DirectWriter:
        """(worker thread) A session's writer; reopening re-hashes what is on disk."""
        return DirectWriter(self.reg.blobs, upload_id, direct=self.reg.config.direct_io)

    async def receive(self, writer: DirectWriter, content: StreamReader) -> int:
        """Stream a request body into `writer`; returns the bytes received.

        What arrived before a disconnect is kept: the upload resumes at the
        offset a status GET reports."""
        run = self.reg.run
        limit = self.reg.config.limits.max_blob_bytes
        start = writer.offset
        received = 0
        chunks: list[bytes] = []
        batched = 0
        pending: asyncio.Future | None = None
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                received += len(chunk)
                if limit is not None and start + received > limit:
                    raise APIError("SIZE_INVALID", f"blob larger than the limit of {limit} bytes", status=413)
                chunks.append(chunk)
                batched += len(chunk)
                if batched >= BATCH:
                    if pending is not None:
                        await pending
                    # hashing and writing release the GIL: two threads, one batch
                    pending = asyncio.gather(run(_hash_all, writer, chunks), run(_store_all, writer, chunks))
                    chunks, batched = [], 0
        finally:
            if pending is not None:
                await pending
            if chunks:
                await asyncio.gather(run(_hash_all, writer, chunks), run(_store_all, writer, chunks))
            await run(writer.flush, False)  # in the kernel: survives kill -9
        return received

    async def cancel(self, s: Session) -> None:
        s.closed = True
        self.sessions.pop(s.id, None)
        w = s.writer
        s.writer = None

        def drop() -> None:
            if w is not None:
                w.abort()
            else:
                (self.reg.blobs.ingest_dir / f"upload-{s.id}").unlink(missing_ok=True)
            self.reg.meta.delete_upload(s.id)

        await self.reg.run(drop)

    async def complete(self, s: Session, expected: str) -> int:
        """Verify the whole upload against `expected` and publish it; returns its size."""
        w = await self.writer(s)
        size = w.offset
        try:
            await self.reg.run(finish, self.reg, w, s.repo, expected, s.id)
        except APIError:  # the digest did not match: finish() dropped data and session
            self._forget(s)
            raise
        except BaseException:  # a disk or database failure: the session stays, reopened on its next request
            s.writer = None
            self.sessions.pop(s.id, None)
            self.reg.pool.submit(w.close)
            raise
        s.closed = True
        s.writer = None
        self.sessions.pop(s.id, None)
        return size

    async def close_idle(self) -> None:
        """Release file handles of sessions nobody touched for a while."""
        cutoff = time.monotonic() - IDLE_CLOSE
        for s in list(self.sessions.values()):
            if s.last_used < cutoff and not s.lock.locked():
                self.sessions.pop(s.id, None)
                if s.writer is not None:
                    w, s.writer = s.writer, None
                    await self.reg.run(w.close)

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            if s.writer is not None:
                await self.reg.run(s.writer.close)
        self.sessions.clear()


def finish(reg: Registry, w: DirectWriter, repo: str, expected: str, upload_id: str | None) -> None:
    """(worker thread) Check the digest, then move the data into place and
    link it into `repo` in one transaction. On a mismatch the data and the
    session are dropped and DIGEST_INVALID raised."""
    w.flush(sync=True)  # durable before the transaction, which then only renames
    alg = digests.parse(expected).algorithm
    actual = w.digest if alg == w.algorithm else digests.of_path(w.tmp, alg)[0]
    if actual != expected:
        w.abort()
        if upload_id is not None:
            reg.meta.delete_upload(upload_id)
        raise APIError("DIGEST_INVALID", f"upload has digest {actual}, not {expected}",
                       {"expected": expected, "actual": actual})
    size = w.offset
    tmp = w.tmp
    w.close()  # a resumable writer keeps its file: handed over below
    reg.meta.finish_upload(upload_id, repo, expected, size, lambda: reg.blobs.adopt(tmp, expected, sync=False))
    reg.blobs.sync_dir(expected)
