"""One blob fetched from an upstream registry once, however many clients
want it meanwhile.

The fetch writes the upstream body to a file under ingest/ (hashing it, off
the event loop) and tells waiting readers how far it got; each reader sends
its client what is on disk so far and waits for more, so every client gets
bytes while the download is still running, at its own pace. At the end the
digest (and the announced size) is checked, and only then is the file moved
into the blob store and linked into the repository, in one metadata
transaction as an upload is. A digest mismatch or a broken download drops
the file, and readers' connections are cut short, so no client takes a
truncated or wrong blob for a good one.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from storage import digests
from storage.directio import open_locked

from ..errors import APIError
from .core import Registry
from .respond import API_VERSION

log = logging.getLogger("soko.registry")
READ = 1 << 20
Opener = Callable[[], Awaitable[aiohttp.ClientResponse]]


class BlobFetch:
    def __init__(self, reg: Registry, repo: str, digest: str):
        self.reg = reg
        self.repo = repo
        self.digest = digest
        self.tmp = reg.blobs.new_temp()
        self.written = 0
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[int | None] = loop.create_future()  # the upstream answered: its size
        self.done: asyncio.Future[int] = loop.create_future()  # verified and stored: the size
        self._changed = asyncio.Event()
        for f in (self.ready, self.done):  # a fetch nobody waited for must not warn
            f.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _progress(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    # -- the download -----------------------------------------------------------------------------------
    async def run(self, open_upstream: Opener) -> None:
        """Download, verify, store; the outcome is in `ready` and `done`."""
        fd = None
        try:
            resp = await open_upstream()
            async with resp:
                size = resp.content_length
                fd = await self.reg.run(open_locked, self.tmp)
                self.ready.set_result(size)
                h = digests.hasher(digests.parse(self.digest).algorithm)
                async for chunk in resp.content.iter_any():
                    await self.reg.run(_write, fd, h, chunk)
                    self.written += len(chunk)
                    self._progress()
            actual = f"{digests.parse(self.digest).algorithm}:{h.hexdigest()}"
            if actual != self.digest or (size is not None and size != self.written):
                raise APIError("UNKNOWN", f"upstream sent {self.written} bytes with digest {actual} for "
                                          f"{self.digest}", status=502)
            await self.reg.run(self._commit, fd)
            fd = None
            self.done.set_result(self.written)
        except BaseException as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            if not self.done.done():
                self.done.set_exception(e)
            if not isinstance(e, asyncio.CancelledError):
                log.warning("proxy: fetching %s for %s failed: %s", self.digest, self.repo, e)
            if fd is not None:
                await self.reg.run(_drop, fd, self.tmp)
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self._progress()

    def _commit(self, fd: int) -> None:
        """(worker thread) Durable, then into place and linked in one transaction."""
        try:
            os.fsync(fd)
            self.reg.meta.finish_upload(None, self.repo, self.digest, self.written,
                                        lambda: self.reg.blobs.adopt(self.tmp, self.digest, sync=False))
            self.reg.blobs.sync_dir(self.digest)
        finally:
            os.close(fd)

    # -- one client -----------------------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse | None:
        """Send the blob as it arrives; None when it is stored already (serve the file)."""
        size = await asyncio.shield(self.ready)
        try:
            fd = await self.reg.run(os.open, self.tmp, os.O_RDONLY)
        except FileNotFoundError:  # moved into the store (or dropped) just now
            await asyncio.shield(self.done)
            return None
        try:
            headers = {**API_VERSION, "Docker-Content-Digest": self.digest, "Content-Type": "application/octet-stream"}
            if size is not None:
                headers["Content-Length"] = str(size)
            resp = web.StreamResponse(headers=headers)
            await resp.prepare(request)
            pos = 0
            while True:
                changed = self._changed
                if pos < self.written:
                    data = await self.reg.run(os.pread, fd, min(self.written - pos, READ), pos)
                    await resp.write(data)
                    pos += len(data)
                elif self.done.done():
                    break
                else:
                    await changed.wait()
        finally:
            await self.reg.run(os.close, fd)
        if self.done.exception() is not None:  # cut the connection: a short body is an error to the client
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp


def _write(fd: int, h, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    h.update(data)


def _drop(fd: int, tmp) -> None:
    os.close(fd)
    tmp.unlink(missing_ok=True)
