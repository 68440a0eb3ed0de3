"""Upload endpoints: start (POST, with mount or single-POST digest), chunks
(PATCH, streamed or with Content-Range), status (GET), close (PUT) and
cancel (DELETE)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from storage import digests, references
from storage.errors import StorageError

from ..errors import APIError
from .admission import CLIENT
from .auth import PRINCIPAL
from .events import BLOB, MOUNT, PUSH
from .ingest import GuardFor, Session, finish
from .respond import check_digest, content_range, empty, upload_range

if TYPE_CHECKING:
    from .app import Server


def _session_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    return {"Location": f"/v2/{name}/blobs/uploads/{upload_id}", "Range": upload_range(offset),
            "Docker-Upload-UUID": upload_id, "Blob-Upload-Session-ID": upload_id}


def _created(name: str, digest: str) -> web.Response:
    return empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


def _quota(srv: "Server", name: str, digest: str) -> GuardFor:
    return lambda size: srv.policies.quota_guard(name, digest, size)


async def _try_mount(srv: "Server", request: web.Request, name: str, digest: str, source: str | None) -> str | None:
    """Link `digest` into `name` when the source repository (or, without one,
    a repository the caller may pull from) holds it; returns where it came from."""
    meta, store = srv.reg.meta, srv.reg.store
    principal = request[PRINCIPAL]
    if not digests.is_valid(digest):
        return None
    if source is not None:
        try:
            references.validate_repository(source)
        except StorageError:
            return None
        if not srv.auth.allows(principal, "repository", source, "pull"):
            return None  # as if it were not there: the client uploads instead
        size = await srv.reg.read(meta.linked_size, source, digest)
    else:
        size = await srv.reg.read(meta.linked_size, name, digest)
        source = name
        if size is None:
            source = next((r for r in await srv.reg.read(meta.repos_linking, digest)
                           if srv.auth.allows(principal, "repository", r, "pull")), None)
            if source is not None:
                info = await store.stat(digest)
                size = None if info is None else info.size
    if size is None:
        return None
    linked = await srv.reg.run(meta.link_blob, name, digest, size, lambda: store.blocking.has(digest),
                               srv.policies.quota_guard(name, digest, size))
    return source if linked else None


async def post_upload(srv: "Server", request: web.Request, name: str) -> web.StreamResponse:
    q = request.query
    mount = q.get("mount")
    source = await _try_mount(srv, request, name, mount, q.get("from")) if mount is not None else None
    if source is not None:
        srv.event(request, MOUNT, repository=name, target=BLOB, digest=mount, source=source)
        return _created(name, mount)
    digest = q.get("digest")
    if digest is not None:
        return await _single_post(srv, request, name, check_digest(digest))
    s = await srv.uploads.create(name, request[CLIENT])
    headers = _session_headers(name, s.id, 0)
    headers["OCI-Chunk-Min-Length"] = str(srv.reg.config.limits.chunk_min_length)
    return empty(202, headers)


async def _single_post(srv: "Server", request: web.Request, name: str, digest: str) -> web.StreamResponse:
    reg = srv.reg
    with srv.uploads.bodies.hold(request[CLIENT]):
        w = await reg.store.writer()
        try:
            received = await srv.uploads.receive(w, request)
            if request.content_length is not None and received != request.content_length:
                raise APIError("SIZE_INVALID", detail={"expected": request.content_length, "received": received})
            await finish(reg, w, name, digest, None, _quota(srv, name, digest))
        except BaseException:
            if not w.closed:
                await w.abort()
            raise
    srv.event(request, PUSH, repository=name, target=BLOB, digest=digest, size=received)
    return _created(name, digest)


async def _check_range(srv: "Server", request: web.Request, name: str, s: Session, offset: int) -> None:
    value = request.headers.get("Content-Range")
    if value is None:
        return
    rng = content_range(value)
    if rng is None or rng[0] != offset:
        why = "malformed Content-Range" if rng is None else f"chunk starts at {rng[0]}, upload is at {offset}"
        raise APIError("BLOB_UPLOAD_INVALID", why, status=416, headers=_session_headers(name, s.id, offset))
    length = rng[1] - rng[0] + 1
    if request.content_length is not None and request.content_length != length:
        raise APIError("SIZE_INVALID", f"Content-Range covers {length} bytes, Content-Length says "
                                       f"{request.content_length}")


async def patch_upload(srv: "Server", request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    s = await srv.uploads.get(name, upload_id, request[CLIENT])
    with srv.uploads.bodies.hold(request[CLIENT]):
        async with s.lock, srv.uploads.writing(s) as w:
            await _check_range(srv, request, name, s, w.offset)
            await srv.uploads.receive(w, request)
            offset = w.offset
            await srv.reg.run(srv.reg.meta.touch_upload, s.id)
    return empty(202, _session_headers(name, s.id, offset))


async def put_upload(srv: "Server", request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    digest = request.query.get("digest")
    if digest is None:
        raise APIError("DIGEST_INVALID", "the closing PUT needs ?digest=")
    check_digest(digest)
    s = await srv.uploads.get(name, upload_id, request[CLIENT])
    with srv.uploads.bodies.hold(request[CLIENT]):
        async with s.lock, srv.uploads.writing(s) as w:
            if request.body_exists:
                await _check_range(srv, request, name, s, w.offset)
                await srv.uploads.receive(w, request)
            size = await srv.uploads.complete(s, w, digest, _quota(srv, name, digest))
    srv.event(request, PUSH, repository=name, target=BLOB, digest=digest, size=size)
    return _created(name, digest)


async def get_upload(srv: "Server", request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    s = await srv.uploads.get(name, upload_id, request[CLIENT])
    async with s.lock:
        return empty(204, _session_headers(name, s.id, await srv.uploads.offset(s)))


async def delete_upload(srv: "Server", request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    s = await srv.uploads.get(name, upload_id, request[CLIENT])
    async with s.lock:
        await srv.uploads.cancel(s)
    return empty(204)
