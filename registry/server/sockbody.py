"""Big request bodies read straight from the socket by a worker thread.

On aiohttp's path a body reaches the handler through its parser and a
StreamReader, 256 KiB at a time: one more copy of every byte and a wake-up of
the event loop per piece, then a hand-off of 4 MiB batches to the threads
that hash and write. For a blob of hundreds of MB that costs more than the
hashing itself (bench/README.md, "Blobs"). So a body of at least MIN_BODY
bytes with a Content-Length, over plain TCP, without a Content-Encoding, is
taken over: the transport stops reading, what aiohttp already buffered is
taken from it, and a thread receives the rest with `recv_into` into a ring of
reused buffers, storing each piece while a second thread hashes the pieces in
order (both release the GIL). Hashing is the slowest stage; receiving runs up
to RING - 1 pieces ahead of it instead of waiting for each hash in turn. It
reads exactly the bytes the body still owes; aiohttp then gets the connection
back with a fresh HTTP parser (its own still waits for the body) and
keep-alive goes on.

A body cut short, too slow (the minimum rate of bodies.py), or that failed to
store ends with the connection closed after the answer; what arrived stays
with the writer, as on aiohttp's path. TLS, chunked bodies, writers that must
drain on the event loop (S3) and bodies beyond SLOTS at once stay on aiohttp's
path. Stopping the server wakes every thread (`stop_all`).
"""
from __future__ import annotations

import asyncio
import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from aiohttp import hdrs, web
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, HttpRequestParser, RequestPayloadError

from registry.client.wire import settled
from storage.content import Writer

from .bodies import SlowClient, pace
from .config import Limits

MIN_BODY = 8 * 1024 * 1024  # smaller bodies: aiohttp's path costs little, and a thread is not worth it
PIECE = 1024 * 1024  # bytes received before they are stored and hashed
RING = 4  # buffers per body: receiving runs up to RING - 1 pieces ahead of hashing
SLOTS = 4  # bodies read this way at once; more wait on aiohttp's path, not for a thread


class SocketBodies:
    def __init__(self, limits: Limits, on_taken: Callable[[], None] | None = None, slots: int = SLOTS):
        self.limits = limits
        self.on_taken = on_taken
        self.free = slots
        self.readers = ThreadPoolExecutor(slots, thread_name_prefix="soko-registry-body")
        self.hashers = ThreadPoolExecutor(slots, thread_name_prefix="soko-registry-body-hash")
        self._active: set[tuple[threading.Event, socket.socket]] = set()
        self._stopping = False

    def _takes(self, request: web.Request, writer: Writer, limit: int | None) -> bool:
        n = request.content_length
        if n is None or n < MIN_BODY or not self.free or self._stopping or not writer.stores_at_once \
                or request.content.is_eof():
            return False
        if limit is not None and writer.offset + n > limit:  # aiohttp's path answers 413 at the limit
            return False
        h = request.headers
        if hdrs.TRANSFER_ENCODING in h or h.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
            return False
        transport = request.transport
        if transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
            return False
        return (transport.get_extra_info("socket") is not None
                and type(getattr(request.protocol, "_parser", None)) is HttpRequestParser)

    async def receive(self, request: web.Request, writer: Writer, limit: int | None) -> int | None:
        """Receive the body into `writer` (hashed and stored); its size, or None
        when it is not one to take over (read it from `request.content`)."""
        if not self._takes(request, writer, limit):
            return None
        content, transport = request.content, request.transport
        assert transport is not None
        try:
            sock = transport.get_extra_info("socket").dup()  # its own descriptor, non-blocking as aiohttp's
        except OSError:  # out of descriptors: aiohttp's path needs none
            return None
        first: list[bytes] = []
        while chunk := content.read_nowait():  # may let the parser feed what it held back: drain it all
            first.append(chunk)
        transport.pause_reading()
        owed = request.content_length - content.total_bytes
        from_socket = writer.offset + sum(map(len, first))  # where the thread's bytes start
        stop = threading.Event()
        self.free -= 1
        self._active.add((stop, sock))
        if self.on_taken is not None:
            self.on_taken()
        job = asyncio.get_running_loop().run_in_executor(self.readers, self._pump, sock, first, owed, writer, stop)
        ok = False
        try:
            try:
                await asyncio.shield(job)
            except asyncio.CancelledError:
                _wake(stop, sock)
                await settled(job)  # the thread lets go of the writer and the socket before anyone
                raise  # else uses them, however often we are cancelled meanwhile
            ok = True
        finally:
            self._active.discard((stop, sock))
            self.free += 1
            sock.close()
            content.total_bytes += writer.offset - from_socket  # the metrics count received bytes from here
            if not (ok and (owed == 0 or _fresh_parser(request.protocol))):
                request.protocol.close()  # after the answer: the parser is still inside this body
            if not content.is_eof():
                content.feed_eof()  # nothing of this body is left for aiohttp to read or linger for
            transport.resume_reading()
        return request.content_length

    def _pump(self, sock: socket.socket, first: list[bytes], owed: int, writer: Writer, stop: threading.Event) -> None:
        """(worker thread) Store and hash `first`, then `owed` bytes from `sock`."""
        for chunk in first:  # what aiohttp had read already: little, hashed here
            writer.hash(chunk)
            writer.store(chunk)
        hashing = _Hashing(self.hashers, writer.hash)
        try:
            self._receive(sock, owed, writer, stop, hashing)
        finally:  # the writer is the caller's again only when no thread uses it
            hashing.finish()

    def _receive(self, sock: socket.socket, owed: int, writer: Writer, stop: threading.Event,
                 hashing: "_Hashing") -> None:
        window, need = pace(self.limits)
        ring = [memoryview(bytearray(PIECE)) for _ in range(RING)]
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        deadline = time.monotonic() + window
        got = 0  # in this window
        i = 0
        while owed:
            if i >= RING:
                hashing.wait_one()  # the oldest piece, in the buffer about to be refilled, is hashed
            # pieces end on PIECE boundaries of the file: whole pages (and large folios) for the page cache
            view = ring[i % RING][:min(PIECE - writer.offset % PIECE, owed)]
            i += 1
            fill = 0
            try:
                while fill < len(view):
                    try:
                        n = sock.recv_into(view[fill:])
                    except BlockingIOError:
                        wait = deadline - time.monotonic()
                        if wait <= 0:
                            raise SlowClient("BLOB_UPLOAD_INVALID", window, need) from None
                        if stop.is_set():
                            raise ConnectionAbortedError("the server is stopping") from None
                        poll.poll(min(wait, 1.0) * 1000)
                        continue
                    except ConnectionError:
                        raise
                    except OSError as e:  # the client's connection, never the store's fault
                        raise ConnectionResetError(f"receiving the body: {e}") from e
                    if not n:
                        if stop.is_set():  # _wake() shut the socket down
                            raise ConnectionAbortedError("the server is stopping")
                        raise ConnectionResetError(f"the client closed the connection {owed - fill} bytes "
                                                   "short of the body")
                    fill += n
                    got += n
                    if got >= need:
                        got = 0
                        deadline = time.monotonic() + window
            finally:  # what arrived is the writer's, also when the rest does not come
                if fill:
                    hashing.put(view[:fill])
                    writer.store(view[:fill])
            owed -= fill

    def stop_all(self) -> None:
        """Wake every thread receiving a body (the server is stopping): each
        ends with what arrived stored, and its request answers at once. Bodies
        that start later stay on aiohttp's path."""
        self._stopping = True
        for stop, sock in list(self._active):
            _wake(stop, sock)

    def close(self) -> None:
        self.stop_all()
        self.readers.shutdown(wait=False)
        self.hashers.shutdown(wait=False)


class _Hashing:
    """Hashes pieces in order in one pool thread while the receiving thread
    goes on; `wait_one` returns when the oldest piece not yet waited for is
    hashed (its buffer is free again)."""

    def __init__(self, pool: ThreadPoolExecutor, hash_piece: Callable[[memoryview], None]):
        self._todo: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._job = pool.submit(self._run, hash_piece)

    def _run(self, hash_piece: Callable[[memoryview], None]) -> None:
        while (piece := self._todo.get()) is not None:
            if self._error is None:
                try:
                    hash_piece(piece)
                except BaseException as e:  # raised to the receiving thread by finish()
                    self._error = e
            self._done.put(None)

    def put(self, piece: memoryview) -> None:
        self._todo.put(piece)

    def wait_one(self) -> None:
        self._done.get()

    def finish(self) -> None:
        """Wait until every piece is hashed; raise what hashing raised."""
        self._todo.put(None)
        self._job.result()
        if self._error is not None:
            raise self._error


def _wake(stop: threading.Event, sock: socket.socket) -> None:
    stop.set()
    try:
        sock.shutdown(socket.SHUT_RD)  # poll() returns at once
    except OSError:
        pass


def _fresh_parser(protocol) -> bool:
    """Give aiohttp's connection a parser in the state between two requests
    (its own still expects the body the thread read). False when the
    connection is not in a state that allows it: then it closes."""
    if getattr(protocol, "_messages", True) or getattr(protocol, "_upgraded", True) \
            or getattr(protocol, "_payload_parser", True) is not None:
        return False
    manager = getattr(protocol, "_manager", None)
    try:
        protocol._parser = HttpRequestParser(
            protocol, protocol._loop, protocol._read_bufsize, max_line_size=protocol.max_line_size,
            max_field_size=protocol.max_field_size, max_headers=protocol.max_headers,
            payload_exception=RequestPayloadError,
            auto_decompress=getattr(manager, "_kwargs", {}).get("auto_decompress", True),
            max_msg_queue_size=MAX_MSG_QUEUE_SIZE)
    except (AttributeError, TypeError):
        return False
    return True
