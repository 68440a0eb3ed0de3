"""The standard library transport (see wire.py): http.client with blocking sockets, each
request in a worker thread while the protocol logic stays on the event loop.

Connections are kept per (scheme, host, port, TLS context) and reused once a response has
been read to its end, unless the server has closed them meanwhile (readable while idle: an
end of file). A request that fails on its way is never sent again here: what may be retried,
and how (an upload resumes at the server's offset), is the session's and the uploader's call. Redirects are followed as aiohttp
follows them: 303 (and 301/302 after a POST) become a GET, and the Authorization header is
never handed to another origin. A cancelled request shuts its socket down, so the worker
thread blocked in it returns at once.
"""
from __future__ import annotations

import asyncio
import http.client
import select
import socket
import ssl
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable
from urllib.parse import urljoin, urlsplit

from . import wire
from .options import ClientOptions
from .wire import settled

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
SLICE = 8 << 20        # a file body goes in slices of this much, progress reported between them
READ = 1 << 20         # the most one read of a body returns
PRELOAD = 64 << 10     # bodies announced this short are read with the head (errors, manifests, JSON)


class Cancel:
    """Lets the event loop stop a worker thread blocked on a socket."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.sock: socket.socket | None = None

    def __call__(self) -> None:
        self.stop.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BodyFailed(Exception):
    """Internal: the request body's own source raised `error` (re-raised as itself)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class StdResponse:
    def __init__(self, transport: "StdTransport", key: tuple, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, body: bytes | None = None):
        self._t, self._key, self._conn, self._resp = transport, key, conn, resp
        self.status = resp.status
        self.headers = resp.msg      # an email.message.Message: get() ignores the case of names
        self._body = body            # the whole body, when it came with the head (PRELOAD)
        self._released = False

    @property
    def content_length(self) -> int | None:
        value = self._resp.getheader("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    async def read(self, limit: int) -> bytes:
        if self._body is not None:
            return self._body[:limit + 1]
        return await self._t.call(self._blocking_read, limit + 1)

    def _read(self, read: Callable[[Any], Any], arg: Any, cancel: Cancel) -> Any:
        """`read(arg)` of the response in this worker thread, a broken connection as wire.Dropped."""
        cancel.sock = self._conn.sock
        try:
            return read(arg)
        except (OSError, http.client.HTTPException) as e:
            raise wire.Dropped(f"the connection dropped while the answer was read ({_text(e)})") from e

    def _blocking_read(self, n: int, cancel: Cancel) -> bytes:
        data = self._read(self._resp.read, n, cancel)
        if len(data) < n:
            self._check_end()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._body is not None:
            if self._body:
                yield self._body
            return
        while True:
            piece = await self._t.call(self._blocking_read1)
            if not piece:
                return
            yield piece

    def _blocking_read1(self, cancel: Cancel) -> bytes:
        data = self._read(self._resp.read1, READ, cancel)
        if not data:
            self._check_end()
        return data

    async def read_into(self, sink: Callable[[memoryview], None]) -> None:
        if self._body is not None:
            if self._body:
                await self._t.call(lambda cancel: sink(memoryview(self._body)))
            return
        await self._t.call(self._blocking_read_into, sink)

    def _blocking_read_into(self, sink: Callable[[memoryview], None], cancel: Cancel) -> None:
        view = memoryview(bytearray(READ))
        while True:
            if cancel.stop.is_set():
                raise wire.Dropped("cancelled")
            n = self._read(self._resp.readinto, view, cancel)
            if not n:
                self._check_end()
                return
            sink(view[:n])

    def _check_end(self) -> None:
        """At the end of what arrived: http.client takes a body that stops short of its
        Content-Length for a complete one when read in pieces; it is not."""
        left = self._resp.length
        if left:
            raise wire.Dropped(f"the connection closed {left} bytes before the end of the answer")

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        r = self._resp
        if r.isclosed() and not r.will_close:
            self._t.keep(self._key, self._conn)
        else:
            self._conn.close()

    async def __aenter__(self) -> "StdResponse":
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


def _create_connection(address: tuple, timeout: float, source_address=None) -> socket.socket:
    """socket.create_connection, an ASCII host name given as bytes: getaddrinfo encodes a str
    with the idna codec, whose import (stringprep, unicodedata) cost every plain-HTTP pull and
    push ~2-4 ms here (a TLS connection still needs it, for the server name)."""
    host, port = address
    if isinstance(host, str) and host.isascii():
        host = host.encode()
    return socket.create_connection((host, port), timeout, source_address)


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__


class StdTransport:
    """http.client in worker threads behind the seam."""

    def __init__(self, options: ClientOptions):
        self.options = options
        self._pool = ThreadPoolExecutor(max_workers=max(8, options.jobs * 2 + 2), thread_name_prefix="soko-http")
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._unverified: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- running blocking work ----------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args, cancel) in a worker thread; cancelling the caller shuts its socket down."""
        loop = self._loop = asyncio.get_running_loop()
        cancel = Cancel()
        fut = loop.run_in_executor(self._pool, fn, *args, cancel)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel()
            await settled(fut)
            if not fut.cancelled() and fut.exception() is None and isinstance(fut.result(), StdResponse):
                fut.result()._conn.close()
            raise

    async def request(self, method: str, url: str, headers: dict[str, str], data: wire.Body, ssl,
                      allow_redirects: bool = True) -> StdResponse:
        try:
            return await self.call(self._blocking_request, method, url, headers, data, ssl, allow_redirects)
        except _BodyFailed as e:
            raise e.error from None

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- connections --------------------------------------------------------------------------------------
    def keep(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        """A kept connection still open at the other end, if there is one."""
        while True:
            with self._lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None or _open(conn):
                return conn
            conn.close()

    def _context(self, ctx) -> ssl.SSLContext:
        if isinstance(ctx, ssl.SSLContext):
            return ctx
        if ctx is False:  # the session decided: --insecure, or a loopback host speaking TLS
            if self._unverified is None:
                self._unverified = ssl._create_unverified_context()
            return self._unverified
        return ssl.create_default_context()

    def _connect(self, scheme: str, host: str, port: int | None, ctx, cancel: Cancel) -> http.client.HTTPConnection:
        timeout = self.options.connect_timeout
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context(ctx))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn._create_connection = _create_connection  # type: ignore[attr-defined]
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            raise wire.TLSFailed(_text(e), certificate=True) from e
        except ssl.SSLError as e:
            raise wire.TLSFailed(_text(e), certificate=False) from e
        except TimeoutError as e:
            raise wire.Dropped(f"timed out connecting to {host}") from e
        except OSError as e:
            raise wire.ConnectFailed(host, e) from e
        assert conn.sock is not None
        conn.sock.settimeout(self.options.read_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cancel.sock = conn.sock
        return conn

    # -- one request, in a worker thread --------------------------------------------------------------------
    def _blocking_request(self, method: str, url: str, headers: dict[str, str], data: wire.Body, ctx,
                          allow_redirects: bool, cancel: Cancel) -> StdResponse:
        headers = dict(headers)
        origin = urlsplit(url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            u = urlsplit(url)
            key = (u.scheme, u.hostname, u.port, id(ctx) if u.scheme == "https" else None)
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            conn = self._take(key)
            if cancel.stop.is_set():
                raise wire.Dropped("cancelled")
            if conn is None:
                conn = self._connect(u.scheme, u.hostname or "", u.port, ctx, cancel)
            cancel.sock = conn.sock
            try:
                resp = self._exchange(conn, method, target, headers, data)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise wire.Dropped(_text(e)) from e
            except BaseException:
                conn.close()
                raise
            location = resp.getheader("Location")
            if not (allow_redirects and resp.status in REDIRECTS and location):
                if resp.length is None or resp.length > PRELOAD:
                    return StdResponse(self, key, conn, resp)
                try:
                    body = resp.read()  # HEAD and empty bodies too: the connection is free again
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    raise wire.Dropped(f"the connection dropped while the answer was read ({_text(e)})") from e
                return StdResponse(self, key, conn, resp, body)
            StdResponse(self, key, conn, resp).release()  # its body is not read: the connection closes
            url = urljoin(url, location)
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, data = ("HEAD" if method == "HEAD" else "GET"), None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
            if urlsplit(url)[:2] != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise wire.TransportError(f"more than {MAX_REDIRECTS} redirects")

    def _exchange(self, conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str],
                  data: wire.Body) -> http.client.HTTPResponse:
        h = {"User-Agent": self.options.user_agent, **headers}
        names = {k.lower() for k in h}
        conn.putrequest(method, target, skip_accept_encoding=True)
        if isinstance(data, bytes):
            h["Content-Length"] = str(len(data))
        elif isinstance(data, wire.FileBody):
            h["Content-Length"] = str(data.size)
        elif data is None:
            if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
                h["Content-Length"] = "0"
        elif "content-length" not in names:
            h["Transfer-Encoding"] = "chunked"
        for k, v in h.items():
            conn.putheader(k, v)
        if isinstance(data, bytes):
            conn.endheaders(data)
        else:
            conn.endheaders()
            if isinstance(data, wire.FileBody):
                self._send_file(conn, data)
            elif data is not None:
                self._send_stream(conn, data, chunked="Transfer-Encoding" in h)
        return conn.getresponse()

    def _send_file(self, conn: http.client.HTTPConnection, body: wire.FileBody) -> None:
        sock = conn.sock
        assert sock is not None and self._loop is not None
        with open(body.path, "rb") as f:
            pos = body.start
            while pos < body.end:
                n = min(SLICE, body.end - pos)
                sent = sock.sendfile(f, pos, n)  # os.sendfile on plain TCP, read + send under TLS
                if not sent:
                    raise wire.Dropped(f"{body.path} is shorter than expected")
                pos += sent
                self._loop.call_soon_threadsafe(body.report, pos)

    def _send_stream(self, conn: http.client.HTTPConnection, body: AsyncIterator[bytes], chunked: bool) -> None:
        """An async iterator's pieces (made on the event loop) as the body."""
        assert self._loop is not None
        it = body.__aiter__()
        while True:
            fut: Future = asyncio.run_coroutine_threadsafe(_next(it), self._loop)
            try:
                piece = fut.result()
            except StopAsyncIteration:
                break
            except BaseException as e:
                raise _BodyFailed(e) from e
            if chunked:
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                conn.send(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")


async def _next(it: AsyncIterator[bytes]) -> bytes:
    return await it.__anext__()


def _open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept connection is still open: readable means the server closed it
    (or sent what nobody asked for); either way it is not to be used again."""
    if conn.sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
