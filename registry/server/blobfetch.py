"""One blob fetched from an upstream registry once, however many clients
want it meanwhile.

The fetch writes the upstream body to a content-store writer and, for the
readers, to a spool file under `<root>/spool/` (off the event loop), and tells
waiting readers how far it got; each reader sends its client what the spool
holds so far and waits for more, so every client gets bytes while the
download is still running, at its own pace. At the end the writer's commit
checks the digest (and the announced size) and publishes the blob, which is
then linked into the repository in one metadata transaction, as an upload is.
A digest mismatch or a broken download drops everything, and readers'
connections are cut short, so no client takes a truncated or wrong blob for a
good one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Awaitable, Callable

from aiohttp import web

from registry.client.wire import Response
from storage import digests
from storage.content import Writer
from storage.errors import DigestMismatch, SizeMismatch
from storage.private import private_dir

from ..errors import APIError
from .core import Registry
from .respond import API_VERSION

log = logging.getLogger("soko.registry")
READ = 1 << 20
Opener = Callable[[], Awaitable[Response]]


class BlobFetch:
    def __init__(self, reg: Registry, repo: str, digest: str):
        self.reg = reg
        self.repo = repo
        self.digest = digest
        self.tmp = reg.root / "spool" / f"fetch-{secrets.token_hex(12)}"
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
        w: Writer | None = None
        reg = self.reg
        try:
            resp = await open_upstream()
            async with resp:
                size = resp.content_length
                fd = await reg.run(_open_spool, self.tmp)
                w = await reg.store.writer(algorithm=digests.parse(self.digest).algorithm)
                self.ready.set_result(size)
                async for chunk in resp.chunks():
                    await reg.run(_write, fd, w, chunk)
                    await w.drain()
                    self.written += len(chunk)
                    self._progress()
            async with reg.pinned():  # no collection between the commit and the link
                try:
                    await w.commit(size, self.digest)
                except (DigestMismatch, SizeMismatch) as e:
                    raise APIError("UNKNOWN", f"upstream sent {self.written} bytes for {self.digest}: {e}",
                                   status=502) from None
                await reg.run(reg.meta.finish_upload, None, self.repo, self.digest, self.written,
                              reg.still_there(self.digest))
            self.done.set_result(self.written)
        except BaseException as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            if not self.done.done():
                self.done.set_exception(e)
            if not isinstance(e, asyncio.CancelledError):
                log.warning("proxy: fetching %s for %s failed: %s", self.digest, self.repo, e)
            if w is not None and not w.closed:
                await w.abort()
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            if fd is not None:
                await reg.run(_drop, fd, self.tmp)  # readers that opened it keep reading
            self._progress()

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


def _open_spool(path) -> int:
    private_dir(path.parent)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)


def _write(fd: int, w: Writer, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    w.write(data)


def _drop(fd: int, tmp) -> None:
    os.close(fd)
    tmp.unlink(missing_ok=True)
