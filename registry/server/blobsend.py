"""Sending a whole blob from a local file: a thread of its own reads it into one
reused buffer and writes it to the connection's socket.

Why not sendfile(2), which aiohttp's FileResponse uses: on the VMs soko is
measured on, a client reading a sendfile'd body got 0.5-0.8x the rate of the
same body copied through a buffer, and cold reads kept less disk I/O in flight
than 1 MiB reads do (bench/README.md, "Blobs"). Copying costs the server CPU
that sendfile does not, which is also what distribution does. The thread writes
without the event loop: the loop is not woken for every refill of the socket
buffer (that wait throttled the loop-driven sendfile on a busy machine) and
never blocks on the disk.

Only plain GETs of whole blobs over plain TCP come here (see `wanted`):
ranges, conditional requests, HEAD, TLS and small blobs stay with FileResponse.
A client that accepts nothing for `limits.body_timeout` seconds is dropped, as
one that sends too slowly is.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
from pathlib import Path

from aiohttp import web

log = logging.getLogger("soko.registry")

MIN_SIZE = 1 << 20  # smaller blobs: FileResponse (a thread is not worth it)
BUFFER = 1 << 20  # bytes read and written at a time
MAX_THREADS = 64  # sends in threads at once; past that, FileResponse
_CONDITIONAL = ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_running = 0  # sends in threads now (touched on the event loop only)


def wanted(request: web.Request, size: int) -> bool:
    """Whether this answer is a whole body this module sends."""
    return (request.method == "GET" and size >= MIN_SIZE and _running < MAX_THREADS
            and request.transport is not None and request.transport.get_extra_info("sslcontext") is None
            and not any(h in request.headers for h in _CONDITIONAL))


class ClientStalled(Exception):
    """The client accepted nothing for the stall timeout: its connection is dropped."""


def _copy(fd: int, sock: socket.socket, size: int, stall: float) -> None:
    """Write bytes [0, size) of `fd` to `sock` (non-blocking; waits for room in poll)."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    sent = 0
    while sent < size:
        n = os.preadv(fd, [view[:min(BUFFER, size - sent)]], sent)
        if n <= 0:
            raise OSError(f"blob file ended at {sent} of {size} bytes")
        done = 0
        while done < n:
            try:
                done += sock.send(view[done:n])
            except BlockingIOError:
                if not poller.poll(stall * 1000):
                    raise ClientStalled(f"client took nothing for {stall:g} s") from None
        sent += n


class _Thread:
    """One send's thread and its descriptors (the file, its own handle on the socket)."""

    def __init__(self, fd: int, sock: socket.socket):
        self.fd, self.sock = fd, sock
        self._lock = threading.Lock()  # close() and stop() never race on the descriptors
        self._closed = False

    def run(self, size: int, stall: float, loop: asyncio.AbstractEventLoop, done: asyncio.Future) -> None:
        error: BaseException | None = None
        try:
            _copy(self.fd, self.sock, size, stall)
        except BaseException as e:  # reported to the handler, which drops the connection
            error = e
        finally:
            self.close()
        loop.call_soon_threadsafe(_settle, done, error)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                self.sock.close()

    def stop(self) -> None:
        """Make the thread's next write fail (and the client see the end)."""
        with self._lock:
            if not self._closed:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _settle(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


async def _flushed(transport: asyncio.Transport, stall: float) -> None:
    """Wait until the transport has handed everything (the headers) to the socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stall
    while transport.get_write_buffer_size():
        if loop.time() > deadline:
            raise ClientStalled(f"client took nothing for {stall:g} s")
        await asyncio.sleep(0.001)


async def send(request: web.Request, path: Path, size: int, headers: dict[str, str],
               stall: float) -> web.StreamResponse:
    """Answer 200 with the file's first `size` bytes (the caller checked `wanted`)."""
    global _running
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(None, os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    resp = web.StreamResponse(headers={**headers, "Accept-Ranges": "bytes"})
    resp.content_length = size
    worker: _Thread | None = None
    _running += 1
    try:
        try:
            await resp.prepare(request)
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away")
            await _flushed(transport, stall)
            # A descriptor of the thread's own (non-blocking, as the connection's is): if
            # aiohttp closes the connection meanwhile, the thread's writes fail; they never
            # reach another socket that reused the number.
            worker = _Thread(fd, transport.get_extra_info("socket").dup())
        finally:
            if worker is None:
                os.close(fd)
        done = loop.create_future()
        try:
            threading.Thread(target=worker.run, args=(size, stall, loop, done), name="soko-blob-send",
                             daemon=True).start()
        except BaseException:
            worker.close()
            raise
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            worker.stop()
            raise
    except (OSError, ClientStalled) as e:  # cut the connection: a short body is an error to the client
        if not isinstance(e, (ConnectionError, ClientStalled)):
            log.warning("blob %s: sending it failed: %s", path.name, e)
        if request.transport is not None:
            request.transport.abort()
        return resp
    finally:
        _running -= 1
    await resp.write_eof()
    return resp
