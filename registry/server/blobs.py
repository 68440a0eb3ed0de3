"""Blob endpoints: GET and HEAD (from a local file: whole bodies copied by a
thread, blobsend.py, the rest by FileResponse; a 307 to a presigned URL; or
streamed from the store; Range) and DELETE of a link."""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from aiohttp import web

from storage.errors import StorageError

from ..errors import APIError
from . import blobsend
from .events import BLOB, DELETE, PULL
from .respond import API_VERSION, check_digest, empty

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("soko.registry")
# The last zero bytes: unsatisfiable (RFC 9110 14.1.3), though aiohttp would read it as "from 0".
_EMPTY_SUFFIX = re.compile(r"bytes=-0+", re.ASCII | re.IGNORECASE)
REDIRECT_SECONDS = 900  # how long a presigned URL stays good


async def get_blob(srv: "Server", request: web.Request, name: str, digest: str) -> web.StreamResponse:
    check_digest(digest)
    size = await srv.reg.read(srv.reg.meta.linked_size, name, digest)
    if size is None and srv.proxy is not None and srv.proxy.serves(name):
        streamed = await srv.proxy.blob(request, name, digest)  # None: now cached here
        if streamed is not None:
            if request.method == "GET":
                srv.event(request, PULL, repository=name, target=BLOB, digest=digest,
                          size=streamed.content_length)
            return streamed
        size = await srv.reg.read(srv.reg.meta.linked_size, name, digest)
    if size is None:
        raise APIError("BLOB_UNKNOWN", detail={"digest": digest})
    if _EMPTY_SUFFIX.fullmatch(request.headers.get("Range", "").strip()):
        return empty(416, {"Content-Range": f"bytes */{size}"})
    if request.method == "GET":
        srv.event(request, PULL, repository=name, target=BLOB, digest=digest, size=size)
    headers = {**API_VERSION, "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
               "Cache-Control": "max-age=31536000"}
    store = srv.reg.store
    path = store.local_path(digest)
    if path is not None:
        if blobsend.wanted(request, size):
            try:
                return await blobsend.send(request, path, size, headers, srv.reg.config.limits.body_timeout)
            except FileNotFoundError:  # deleted under the link (a store changed behind the registry's back)
                raise APIError("BLOB_UNKNOWN", detail={"digest": digest}) from None
        # FileResponse stats and opens off the loop, answers Range with 206/416
        # and conditional requests, and sends with sendfile(2).
        return web.FileResponse(path, headers=headers)
    url = store.url(digest, REDIRECT_SECONDS) if request.method == "GET" else None
    if url is not None:  # clients drop the registry's credentials on a cross-origin redirect
        return empty(307, {"Location": url, "Docker-Content-Digest": digest, "Cache-Control": "no-store"})
    return await _stream(srv, request, digest, size, headers)


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """[start, stop) of a single-range request; None for the whole blob; ValueError when unsatisfiable."""
    r = request.http_range  # ValueError for a malformed or multi-part range
    if r.start is None and r.stop is None:
        return None
    start, stop = r.start, r.stop
    if start is None:
        start = 0
    if start < 0:  # a suffix: the last -start bytes
        start, stop = max(size + start, 0), size
    stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        raise ValueError("unsatisfiable")
    return start, stop


async def _stream(srv: "Server", request: web.Request, digest: str, size: int,
                  headers: dict[str, str]) -> web.StreamResponse:
    """A blob from a store without local files, as FileResponse would send it."""
    try:
        rng = _range(request, size)
    except ValueError:
        return empty(416, {"Content-Range": f"bytes */{size}"})
    start, stop = (0, size) if rng is None else rng
    resp = web.StreamResponse(status=200 if rng is None else 206, headers={**headers, "Accept-Ranges": "bytes"})
    if rng is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    resp.content_length = stop - start
    await resp.prepare(request)
    if request.method == "HEAD" or stop == start:
        return resp
    try:
        async for chunk in srv.reg.store.read(digest, start, stop - start):
            await resp.write(chunk)
    except StorageError as e:  # cut the connection: a short body is an error to the client
        log.warning("blob %s: reading from the store failed: %s", digest, e)
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    return resp


async def delete_blob(srv: "Server", request: web.Request, name: str, digest: str) -> web.StreamResponse:
    check_digest(digest)
    if not srv.reg.config.delete_enabled:
        raise APIError("UNSUPPORTED", "deletes are disabled on this registry")
    if not await srv.reg.run(srv.reg.meta.unlink_blob, name, digest):
        raise APIError("BLOB_UNKNOWN", detail={"digest": digest})
    srv.event(request, DELETE, repository=name, target=BLOB, digest=digest)
    return empty(202, {"Docker-Content-Digest": digest})
