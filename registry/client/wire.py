"""The seam between the client's protocol logic and an HTTP implementation.

Everything the registry protocol needs (scheme and TLS choice, the token flow,
retries, manifests, uploads, verification: session.py and the modules above it)
talks to a `Transport` and gets `Response`s; two implement it:

- wire_std.StdTransport: the standard library's http.client, each request in a
  worker thread with a blocking socket. Nothing to import but what Python has
  loaded already (~0.04 s for http.client, ssl and concurrent.futures), where
  aiohttp costs a `soko pull` ~0.13-0.16 s before its first byte. The default.
- wire_aio.AioTransport: aiohttp, for the registry server's pull-through proxy,
  which lives in aiohttp's event loop anyway (ClientOptions.transport="aiohttp").

A transport turns its own failures into these exceptions, so the session's
rules (what is retried, what is a TLS problem) hold whichever carries the bytes.
"""
from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Mapping, Protocol, Union

from .errors import ClientError


class TransportError(ClientError):
    """The connection failed in a way no retry is expected to fix. The session turns these
    into its own errors; one met reading a body travels as it is (a one-line ClientError)."""


class ConnectFailed(TransportError):
    """No connection to the host (refused, unresolvable, timed out connecting)."""

    def __init__(self, host: str, os_error: BaseException | None):
        super().__init__(str(os_error) or type(os_error).__name__)
        self.host = host
        self.os_error = os_error

    def reason(self) -> str:
        """`connection refused` rather than "[Errno 111] Connect call failed ('127.0.0.1', 5000)"."""
        err = self.os_error
        if isinstance(err, socket.gaierror):  # not errno values: strerror has no words for them
            return f"the host {self.host} could not be resolved ({err.strerror or err})"
        if getattr(err, "errno", None):
            return os.strerror(err.errno).lower()  # type: ignore[union-attr]
        return str(err) or type(err).__name__


class TLSFailed(TransportError):
    """The TLS handshake failed; `certificate`: the peer's certificate did not verify."""

    def __init__(self, text: str, certificate: bool):
        super().__init__(text)
        self.certificate = certificate


class Dropped(TransportError):
    """The peer went away or fell silent mid-exchange: worth another attempt."""


@dataclass(frozen=True)
class FileBody:
    """Bytes [start, end) of a file as a request body; each transport sends it its own
    way (sendfile(2) on plain TCP), calling `report(bytes done)` along the way."""
    path: str
    start: int
    end: int
    report: Callable[[int], None]

    @property
    def size(self) -> int:
        return self.end - self.start


Body = Union[bytes, FileBody, AsyncIterator[bytes], None]


class Response(Protocol):
    """One answer; read it (or not) and release it (`async with` does)."""
    status: int
    headers: Mapping[str, str]      # names in any case

    @property
    def content_length(self) -> int | None: ...

    async def read(self, limit: int) -> bytes:
        """The body to its end, or its first `limit + 1` bytes when it is longer."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body piece by piece, as it arrives."""

    async def read_into(self, sink: Callable[[memoryview], None]) -> None:
        """The body to its end, each piece handed to `sink` in a worker thread (the pieces
        are only valid during the call). What `sink` raises stops the reading and comes
        out here; the connection is then not used again. For bodies that go to disk:
        with the stdlib transport the socket reads, hashing and writes stay in one thread
        and release the GIL, where a hop to the event loop per piece cost about half
        again as much CPU per byte."""

    def release(self) -> None: ...

    async def __aenter__(self) -> "Response": ...

    async def __aexit__(self, *exc) -> None: ...


class Transport(Protocol):
    async def request(self, method: str, url: str, headers: dict[str, str], data: Body, ssl,
                      allow_redirects: bool = True) -> Response:
        """Send one request (`ssl`: an SSLContext, or False for no verification) and
        return its response; raises only this module's exceptions."""

    async def close(self) -> None: ...


async def settled(fut: asyncio.Future) -> None:
    """Wait until a worker thread's future is done, whatever else cancels us
    meanwhile (awaiting `fut` itself would cancel it and leave the thread running)."""
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except BaseException:
            pass
