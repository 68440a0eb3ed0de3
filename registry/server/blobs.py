"""Blob endpoints: GET and HEAD (sendfile, Range) and DELETE of a link."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import APIError
from .events import BLOB, DELETE, PULL
from .respond import API_VERSION, check_digest, empty

if TYPE_CHECKING:
    from .app import Server

# The last zero bytes: unsatisfiable (RFC 9110 14.1.3), though aiohttp would read it as "from 0".
_EMPTY_SUFFIX = re.compile(r"bytes=-0+", re.ASCII | re.IGNORECASE)


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
    # FileResponse stats and opens off the loop, answers Range with 206/416
    # and sends with sendfile(2).
    return web.FileResponse(srv.reg.blobs.path(digest), headers=headers)


async def delete_blob(srv: "Server", request: web.Request, name: str, digest: str) -> web.StreamResponse:
    check_digest(digest)
    if not srv.reg.config.delete_enabled:
        raise APIError("UNSUPPORTED", "deletes are disabled on this registry")
    if not await srv.reg.run(srv.reg.meta.unlink_blob, name, digest):
        raise APIError("BLOB_UNKNOWN", detail={"digest": digest})
    srv.event(request, DELETE, repository=name, target=BLOB, digest=digest)
    return empty(202, {"Docker-Content-Digest": digest})
