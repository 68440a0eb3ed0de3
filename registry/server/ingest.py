"""Upload sessions and the streaming write path.

A session is a row in the metadata plus the content store's resumable ingest
of the same id (a file `upload-<id>`, or S3 objects); its offset is what the
ingest holds, so after a restart (even `kill -9`) the session continues where
the bytes end. Between requests a session holds no descriptor and no buffer,
only its parked writer state (the running hash), so its next chunk goes on
without reading anything back.

Request bodies are read on the event loop, at a minimum pace (bodies.py), and
handed in batches to two worker threads, one hashing and one writing, while
the loop already receives the next batch; at most one batch is in flight per
upload. Big bodies with a Content-Length skip that: a thread of their own
reads them from the socket, hashes and writes them (sockbody.py).

A blob becomes visible only when the closing PUT's digest matches: the
writer's commit verifies and publishes it (with a fresh modification
time, so garbage collection's grace covers it), then one metadata
transaction checks it is still there and links it into the repository.

Sessions count against caps per client and in total (admission.py) until they
finish, are cancelled, or sit idle for `limits.session_idle`: an idle session
is forgotten here but stays resumable (its next request re-hashes the file).
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from storage.content import Writer
from storage.errors import DigestMismatch, StorageError

from ..errors import APIError
from .admission import Caps
from .bodies import PacedReader
from .core import Registry
from .meta import Guard
from .sockbody import SocketBodies

GuardFor = Callable[[int], "Guard | None"]  # the upload's size -> a check before it is linked (quotas)

BATCH = 4 * 1024 * 1024  # bytes handed to the worker thread at once
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Session:
    id: str
    repo: str
    client: str  # whose caps it counts against
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    parked: Any = None  # the writer's state between requests (None: the store finds it again)
    recorded: bool = True  # its row is in the metadata (False while create() writes it)


def _hash_all(writer: Writer, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.hash(chunk)


def _store_all(writer: Writer, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.store(chunk)


async def _release(w: Writer) -> None:
    """Close after a failure: keep what was stored, raise nothing new."""
    try:
        await w.close()
    except (OSError, StorageError):
        pass


class Uploads:
    def __init__(self, reg: Registry, on_socket_body: Callable[[], None] | None = None):
        self.reg = reg
        lim = reg.config.limits
        self.socket_bodies = SocketBodies(lim, on_socket_body)
        self.sessions: dict[str, Session] = {}
        self.caps = Caps("upload sessions", lim.max_upload_sessions, lim.max_client_sessions)
        self.bodies = Caps("uploads", lim.max_concurrent_uploads, lim.max_client_uploads)

    # -- the sessions this process knows ---------------------------------------------------------
    def _remember(self, s: Session) -> None:
        self.sessions[s.id] = s
        self.caps.add(s.client)

    def _drop(self, s: Session, closed: bool = True) -> None:
        s.closed = s.closed or closed
        s.parked = None
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]
            self.caps.remove(s.client)

    async def create(self, repo: str, client: str) -> Session:
        idle = self.reg.config.limits.session_idle
        try:
            self.caps.check(client, idle)
        except APIError:
            self.close_idle()
            await self.forget_finished()
            self.caps.check(client, idle)
        s = Session(str(uuid.uuid4()), repo, client, recorded=False)
        self._remember(s)  # counted at once, before anything awaits
        try:
            await self.reg.run(self.reg.meta.new_upload, s.id, repo)
        except BaseException:
            self._drop(s)
            raise
        s.recorded = True
        return s

    async def get(self, repo: str, upload_id: str, client: str) -> Session:
        """The session, if it exists and belongs to `repo` (BLOB_UPLOAD_UNKNOWN otherwise)."""
        # The row decides, not memory: garbage collection in another process
        # may have expired the session.
        row = await self.reg.read(self.reg.meta.upload, upload_id) if _ID_RE.match(upload_id) else None
        s = self.sessions.get(upload_id)
        if row is None:
            if s is not None and not s.lock.locked():
                self._drop(s)
            s = None
        elif s is None:  # known to the database only (a restart, or idle): counts for whoever resumes it
            s = Session(upload_id, row.repo, client)
            self._remember(s)
        if s is None or s.repo != repo or s.closed:
            raise APIError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
        s.last_used = time.monotonic()
        return s

    def close_idle(self) -> None:
        """Forget sessions nobody touched for `session_idle` (row and file stay: resumable)."""
        cutoff = time.monotonic() - self.reg.config.limits.session_idle
        for s in list(self.sessions.values()):
            if s.last_used < cutoff and not s.lock.locked():
                self._drop(s, closed=False)

    async def forget_finished(self) -> None:
        """Forget sessions whose row is gone: finished, cancelled or expired by
        another process (a replica behind the same balancer) since they were here."""
        live = await self.reg.read(self.reg.meta.upload_ids)
        for s in list(self.sessions.values()):
            if s.recorded and s.id not in live and not s.lock.locked():
                self._drop(s)

    def close_all(self) -> None:
        self.socket_bodies.close()
        for s in list(self.sessions.values()):
            self._drop(s, closed=False)

    # -- one request's writer ----------------------------------------------------------------------
    @asynccontextmanager
    async def writing(self, s: Session) -> AsyncIterator[Writer]:
        """The session's writer for one request (hold `s.lock`): resumed from the
        parked state and parked again at the end, so nothing stays open between
        requests. After a store error it is only closed: the next request finds
        the state again in the store."""
        if s.closed:
            raise APIError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": s.id})
        parked, s.parked = s.parked, None
        w = await self.reg.store.writer(s.id, resume=parked)
        try:
            yield w
        except (OSError, StorageError) as e:
            if not isinstance(e, ConnectionError):  # the store may not hold what the writer counted
                if not w.closed:
                    await _release(w)
                raise
            await self._park(s, w)
            raise
        except BaseException:  # the client's fault (a bad range, a drop, too slow): the writer is sound
            await self._park(s, w)
            raise
        await self._park(s, w)

    async def _park(self, s: Session, w: Writer) -> None:
        s.last_used = time.monotonic()
        if w.closed:  # complete() commits and closes it
            return
        try:
            parked = await w.park()
        except (OSError, StorageError):
            await _release(w)
            return
        if not s.closed:
            s.parked = parked

    async def offset(self, s: Session) -> int:
        """Bytes the session holds (hold `s.lock`): the store says, not this
        process's parked state, which another replica may have overtaken."""
        return await self.reg.store.ingest_offset(s.id, s.parked)

    async def receive(self, writer: Writer, request: web.Request) -> int:
        """Stream a request body into `writer`; returns the bytes received.

        What arrived before a disconnect is kept: the upload resumes at the
        offset a status GET reports. Big bodies are read from the socket by a
        thread of their own (sockbody.py), the others here."""
        limit = self.reg.config.limits.max_blob_bytes
        taken = await self.socket_bodies.receive(request, writer, limit)
        if taken is not None:
            return taken
        run = self.reg.run
        reader = PacedReader(request.content, self.reg.config.limits)
        start = writer.offset
        received = 0
        chunks: list[bytes] = []
        batched = 0
        pending: asyncio.Future | None = None
        try:
            while True:
                chunk = await reader.read()
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
                    pending = asyncio.ensure_future(self._batch(writer, chunks))
                    chunks, batched = [], 0
        finally:  # what arrived is the writer's: park or commit keeps it
            if pending is not None:
                await pending
            if chunks:
                await asyncio.gather(run(_hash_all, writer, chunks), run(_store_all, writer, chunks))
        return received

    async def _batch(self, writer: Writer, chunks: list[bytes]) -> None:
        """Hashing and writing release the GIL: two threads for one batch; then whole
        parts leave for the store (S3) while the loop receives the next batch."""
        await asyncio.gather(self.reg.run(_hash_all, writer, chunks), self.reg.run(_store_all, writer, chunks))
        await writer.drain()

    # -- the end of a session --------------------------------------------------------------------
    async def cancel(self, s: Session) -> None:
        self._drop(s)
        await self.reg.store.abort_ingest(s.id, force=True)
        await self.reg.run(self.reg.meta.delete_upload, s.id)

    async def complete(self, s: Session, w: Writer, expected: str, guard_for: GuardFor | None = None) -> int:
        """Verify the whole upload against `expected` and publish it; returns its size."""
        size = w.offset
        try:
            await finish(self.reg, w, s.repo, expected, s.id, guard_for)
        except APIError:  # refused (digest, quota): finish() dropped data and session
            self._drop(s)
            raise
        self._drop(s)
        return size


async def finish(reg: Registry, w: Writer, repo: str, expected: str, upload_id: str | None,
                 guard_for: GuardFor | None = None) -> None:
    """Commit (the store verifies the digest and publishes the blob), then link it
    into `repo` in one transaction (whose guard may refuse it). On a mismatch or
    a refusal the session is dropped and the error raised (a refused blob stays
    unlinked: garbage collection takes it after the grace period)."""
    size = w.offset
    async with reg.pinned():  # no collection between the commit and the link
        try:
            await w.commit(None, expected)
        except DigestMismatch as e:  # the writer dropped the data
            if upload_id is not None:
                await reg.run(reg.meta.delete_upload, upload_id)
            raise APIError("DIGEST_INVALID", f"upload has digest {e.actual}, not {expected}",
                           {"expected": expected, "actual": e.actual}) from None
        try:
            await reg.run(reg.meta.finish_upload, upload_id, repo, expected, size, reg.still_there(expected),
                          guard_for(size) if guard_for else None)
        except APIError:
            if upload_id is not None:
                await reg.run(reg.meta.delete_upload, upload_id)
            raise
