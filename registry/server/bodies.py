"""Reading request bodies at a pace a slow client cannot abuse.

Every `body_timeout` seconds a body must bring at least `body_timeout *
body_min_rate` bytes (and at least one), as Apache's mod_reqtimeout MinRate
and nginx's client_body_timeout do; a client that stalls or trickles gets
SlowClient, which the dispatcher answers 408 before closing the connection.
What arrived until then stays: an upload resumes from it.
"""
from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web

from ..errors import APIError
from .config import Limits
from .respond import error_response


class SlowClient(APIError):
    """The body came too slowly: answer 408 and drop the connection."""

    def __init__(self, code: str, window: float, need: int):
        super().__init__(code, f"request body too slow (less than {need} bytes in {window:g} s)", status=408)


def pace(limits: Limits) -> tuple[float, int]:
    """The minimum-rate rule: (window in seconds, bytes a body must bring in each window)."""
    return limits.body_timeout, max(1, int(limits.body_timeout * limits.body_min_rate))


class PacedReader:
    """`read()` is StreamReader.readany() with the minimum-rate rule."""

    def __init__(self, content: StreamReader, limits: Limits, code: str = "BLOB_UPLOAD_INVALID"):
        self.content = content
        self.window, self.need = pace(limits)
        self.code = code
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + self.window
        self._got = 0

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        try:
            async with asyncio.timeout_at(self._deadline):
                chunk = await self.content.readany()
        except TimeoutError:
            raise SlowClient(self.code, self.window, self.need) from None
        self._got += len(chunk)
        if self._got >= self.need:  # this window is done: the next one starts now
            self._got = 0
            self._deadline = self._loop.time() + self.window
        return chunk


async def read_limited(request: web.Request, limits: Limits, limit: int, code: str, what: str) -> bytes:
    """The whole body, refused (413, `code`) past `limit` bytes."""
    too_big = APIError(code, f"{what} larger than the limit of {limit} bytes", status=413, detail={"limit": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    reader = PacedReader(request.content, limits, code)
    buf = bytearray()
    while True:
        chunk = await reader.read()
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise too_big


async def drop_slow(request: web.Request, err: SlowClient) -> web.StreamResponse:
    """Answer 408 and close at once (no lingering read of what the client still owes)."""
    resp = error_response(err)
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()  # the answer is in the transport's buffer: flushed, then closed
    return resp
