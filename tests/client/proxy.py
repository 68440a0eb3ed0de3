"""A loopback TCP proxy in front of a real registry that misbehaves on purpose
(drops, corrupts, fails or redirects requests), and a second origin for blobs
that a registry redirects to (a CDN), recording what each was sent."""
from __future__ import annotations

import asyncio
import http.server
import threading
from dataclasses import dataclass
from typing import Callable

from tests.client.client_helpers import LoopbackHTTP


@dataclass
class Seen:
    """A request as the proxy saw it (header names in lower case)."""
    method: str
    path: str
    headers: dict[str, str]


Intercept = Callable[[Seen], "bytes | None"]


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {**(headers or {}), "Content-Length": str(len(body)),
                                               "Connection": "close"}.items())
    return f"HTTP/1.1 {status} Intercepted\r\n{head}\r\n".encode() + body


class FailNth:
    """An intercept: the `nth` request (1-based) whose method is `method` and whose path contains `part`,
    and the `times - 1` matching ones after it, are answered `status` (with Retry-After if given);
    `status=None` drops the connection instead, with no answer at all."""

    def __init__(self, method: str, part: str, nth: int = 1, status: int | None = 503,
                 retry_after: str | None = None, times: int = 1):
        self.method, self.part, self.nth, self.status, self.times = method, part, nth, status, times
        self.headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.seen = 0
        self.failed: list[str] = []

    def __call__(self, req: Seen) -> bytes | None:
        if req.method != self.method or self.part not in req.path:
            return None
        self.seen += 1
        if not self.nth <= self.seen < self.nth + self.times:
            return None
        self.failed.append(f"{req.method} {req.path}")
        return b"" if self.status is None else answer(self.status, self.headers)


def redirect_blobs(origin: str) -> Intercept:
    """An intercept: blob GETs are answered 307 to `origin`/cdn/DIGEST with a signature-like query."""
    def intercept(req: Seen) -> bytes | None:
        if req.method == "GET" and "/blobs/sha256:" in req.path:
            digest = req.path.rsplit("/", 1)[1].split("?")[0]
            return answer(307, {"Location": f"{origin}/cdn/{digest}?X-Amz-Signature=abc123"})
        return None
    return intercept


class BlobOrigin(LoopbackHTTP):
    """Another origin (its own loopback port) serving blob bytes by digest at /cdn/DIGEST,
    recording every request's path and headers; `Range: bytes=N-` is honoured."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs
        self.requests: list[Seen] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "BlobOrigin":
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                origin.requests.append(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                data = origin.blobs.get(self.path.split("?")[0].rsplit("/", 1)[-1])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self._serve(Handler)
        return self


class Proxy:
    """Forwards 127.0.0.1:port to a target, counting bytes each way.

    `drop_after=(direction, n)`: once, when that direction ('up' = client to
    server, 'down' = server to client) has carried n bytes in total, both
    sockets of that connection are closed mid-stream. `corrupt_at=n`: once,
    the n-th downstream byte is flipped. `fail_first=k`: the first k connections
    get `fail_status` (with `retry_after`, if given) to their first request.
    `drop_request=(b"PATCH ", n)`: the connection carrying the n-th request that
    starts so is closed before any of it reaches the server.
    `intercept(seen)`: every request is parsed (head, Content-Length body) and
    recorded in `requests`; when `intercept` returns bytes, they are the whole
    answer (the request never reaches the server) and the connection closes."""

    def __init__(self, target: str, drop_after: tuple[str, int] | None = None, corrupt_at: int | None = None,
                 fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None,
                 drop_request: tuple[bytes, int] | None = None, intercept: "Intercept | None" = None):
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.drop_after = drop_after
        self.corrupt_at = corrupt_at
        self.up = 0
        self.down = 0
        self.dropped = False
        self.corrupted = False
        self.connections = 0
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.failed_requests: list[str] = []
        self.drop_request = drop_request
        self.intercept = intercept
        self.requests: list[Seen] = []
        self._seen_requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "Proxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task] = set()

        def start(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            t = asyncio.ensure_future(self._handle(r, w))
            handlers.add(t)
            t.add_done_callback(handlers.discard)

        server = await asyncio.start_server(start, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()  # no new connections while the open ones are cancelled
            for t in list(handlers):
                t.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.fail_first > 0:
            self.fail_first -= 1
            try:
                head = await cr.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                cw.close()
                return
            self.failed_requests.append(head.split(b"\r\n", 1)[0].decode())
            extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after is not None else ""
            cw.write(f"HTTP/1.1 {self.fail_status} Nope\r\n{extra}Content-Length: 0\r\n"
                     f"Connection: close\r\n\r\n".encode())
            await cw.drain()
            cw.close()
            return
        try:
            sr, sw = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            cw.close()
            return
        closed = asyncio.Event()

        def kill() -> None:
            for w in (cw, sw):
                try:
                    w.transport.abort()
                except Exception:
                    pass
            closed.set()

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, direction: str) -> None:
            try:
                while not closed.is_set():
                    data = await r.read(65536)
                    if not data:
                        break
                    if direction == "up" and self.drop_request and not self.dropped \
                            and data.startswith(self.drop_request[0]):
                        self._seen_requests += 1
                        if self._seen_requests == self.drop_request[1]:
                            self.dropped = True
                            kill()
                            return
                    before = self.up if direction == "up" else self.down
                    if direction == "down" and self.corrupt_at is not None and not self.corrupted \
                            and before <= self.corrupt_at < before + len(data):
                        i = self.corrupt_at - before
                        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                        self.corrupted = True
                    if self.drop_after and not self.dropped and self.drop_after[0] == direction \
                            and before + len(data) >= self.drop_after[1]:
                        keep = self.drop_after[1] - before
                        data = data[:keep]
                        self.dropped = True
                        if data:
                            w.write(data)
                            await w.drain()
                        self._count(direction, len(data))
                        kill()
                        return
                    w.write(data)
                    await w.drain()
                    self._count(direction, len(data))
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    w.write_eof() if not closed.is_set() else None
                except (OSError, RuntimeError):
                    pass

        up = self._requests(cr, sw, cw, kill) if self.intercept else pump(cr, sw, "up")
        await asyncio.gather(up, pump(sr, cw, "down"))
        for w in (cw, sw):
            w.close()

    async def _requests(self, cr: asyncio.StreamReader, sw: asyncio.StreamWriter, cw: asyncio.StreamWriter,
                        kill: Callable[[], None]) -> None:
        """Client to server one request at a time (clients wait for each answer), each shown to `intercept`."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await cr.read(65536)
                    if not data:
                        sw.write_eof()
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                seen = Seen(method, path, headers)
                self.requests.append(seen)
                assert "chunked" not in headers.get("transfer-encoding", ""), "the proxy parses Content-Length bodies"
                answer = self.intercept(seen)
                if answer is None:
                    sw.write(head + b"\r\n\r\n")
                left = int(headers.get("content-length", "0"))
                while left:
                    if not buf:
                        buf = await cr.read(65536)
                        if not buf:
                            return
                    piece, buf = buf[:left], buf[left:]
                    left -= len(piece)
                    if answer is None:
                        sw.write(piece)
                        self._count("up", len(piece))
                if answer is not None:
                    cw.write(answer)
                    cw.close()  # after what is still buffered has gone (kill() would throw it away)
                    try:
                        await cw.wait_closed()
                    except (ConnectionError, OSError):
                        pass
                    kill()
                    return
                await sw.drain()
        except (ConnectionError, OSError):
            kill()

    def _count(self, direction: str, n: int) -> None:
        if direction == "up":
            self.up += n
        else:
            self.down += n
