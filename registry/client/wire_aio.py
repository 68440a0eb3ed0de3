"""The aiohttp transport (see wire.py): for the registry server's pull-through proxy,
which runs in aiohttp's event loop; the CLI's client uses wire_std."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from .aio import aiohttp

from . import wire
from .options import ClientOptions

# Connection trouble worth another attempt (the peer went away mid-exchange).
RETRYABLE_EXC = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError,
                 aiohttp.ServerTimeoutError, asyncio.TimeoutError, ConnectionResetError)


def translate(e: BaseException) -> wire.TransportError:
    """aiohttp's exception as the seam's (the order matters: these classes nest)."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return wire.TLSFailed(_text(e), certificate=True)
    if isinstance(e, aiohttp.ClientSSLError):
        return wire.TLSFailed(_text(e), certificate=False)
    if isinstance(e, aiohttp.ClientConnectorError):
        return wire.ConnectFailed(e.host, e.os_error)
    if isinstance(e, RETRYABLE_EXC):
        return wire.Dropped(str(e) or type(e).__name__)
    return wire.TransportError(str(e) or type(e).__name__)


def _text(e: BaseException) -> str:
    os_error = getattr(e, "os_error", None)
    return str(os_error or e) or type(e).__name__


class AioResponse:
    def __init__(self, resp: aiohttp.ClientResponse):
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    async def read(self, limit: int) -> bytes:
        buf = bytearray()
        async for piece in self.chunks():
            buf += piece
            if len(buf) > limit:
                break
        return bytes(buf[:limit + 1])

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._resp.content.iter_any():
                yield piece
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise translate(e) from e

    async def read_into(self, sink: Callable[[memoryview], None]) -> None:
        loop = asyncio.get_running_loop()
        async for piece in self.chunks():
            fut = loop.run_in_executor(None, sink, memoryview(piece))
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                await wire.settled(fut)  # the sink must be done with its writer before anyone closes it
                raise

    def release(self) -> None:
        self._resp.release()

    async def __aenter__(self) -> "AioResponse":
        return self

    async def __aexit__(self, *exc) -> None:
        self._resp.release()


class SendfilePayload(aiohttp.payload.Payload):
    """A FileBody as aiohttp's request body, handed to the kernel with loop.sendfile
    (os.sendfile on plain TCP, read/write under TLS)."""

    SLICE = 8 << 20  # progress is reported between slices

    def __init__(self, body: wire.FileBody):
        super().__init__(body.path, content_type="application/octet-stream")
        self._body = body
        self._size = body.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a blob body is not text")

    async def write(self, writer) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        b = self._body
        end = b.end if content_length is None else min(b.end, b.start + content_length)
        writer.send_headers()
        await writer.drain()
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise aiohttp.ClientConnectionResetError("connection closed before the body was sent")
        loop = asyncio.get_running_loop()
        with open(b.path, "rb") as f:
            pos = b.start
            while pos < end:
                n = min(self.SLICE, end - pos)
                sent = await loop.sendfile(transport, f, pos, n)
                if not sent:
                    raise aiohttp.ClientPayloadError(f"{b.path} is shorter than expected")
                pos += sent
                b.report(pos)


async def _watched(body: AsyncIterator[bytes], failed: list[BaseException]) -> AsyncIterator[bytes]:
    """`body`, noting what it raises (aiohttp reports it wrapped as a connection error)."""
    try:
        async for piece in body:
            yield piece
    except Exception as e:
        failed.append(e)
        raise


class AioTransport:
    """aiohttp's ClientSession behind the seam (one is made unless `http` is given)."""

    def __init__(self, options: ClientOptions, http: aiohttp.ClientSession | None = None):
        self._own = http is None
        if http is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=options.connect_timeout,
                                            sock_read=options.read_timeout)
            conn = aiohttp.TCPConnector(limit=max(8, options.jobs * 2), enable_cleanup_closed=True)
            http = aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False,
                                         read_bufsize=1 << 18, headers={"User-Agent": options.user_agent})
        self.http = http

    async def request(self, method: str, url: str, headers: dict[str, str], data: wire.Body, ssl,
                      allow_redirects: bool = True) -> AioResponse:
        failed: list[BaseException] = []
        if isinstance(data, wire.FileBody):
            body = SendfilePayload(data)
        elif data is not None and not isinstance(data, bytes):
            body = _watched(data, failed)
        else:
            body = data
        try:
            resp = await self.http.request(method, url, headers=headers, data=body, ssl=ssl,
                                           allow_redirects=allow_redirects)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionResetError) as e:
            if failed:  # the body's own source failed (a verification, a drop upstream): that, as itself
                raise failed[0] from None
            raise translate(e) from e
        return AioResponse(resp)

    async def close(self) -> None:
        if self._own:
            await self.http.close()

