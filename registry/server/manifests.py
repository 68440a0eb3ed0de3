"""Manifest endpoints: GET/HEAD (exact bytes, Accept negotiation as Docker
clients expect), PUT (validated, references checked, `?tag=`), DELETE."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from storage import digests, mediatypes as mt
from storage.errors import ManifestError
from storage.model import Index, Manifest, Platform, parse_manifest

from ..errors import APIError
from .bodies import read_limited
from .events import DELETE, MANIFEST, PULL, PUSH
from .meta import REF_BLOB, REF_MANIFEST, ManifestRow, NewManifest
from .respond import API_VERSION, accepted_types, check_digest, check_tag, empty, error_response, is_digest_ref

if TYPE_CHECKING:
    from .app import Server

SMALL_MANIFEST = 64 * 1024  # bigger ones are hashed and parsed off the event loop
# Layers that live elsewhere (foreign/non-distributable with URLs) need not be pushed.
_FOREIGN = {mt.DOCKER_LAYER_FOREIGN, mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_GZIP,
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"}


async def _lookup(srv: "Server", name: str, reference: str) -> ManifestRow:
    meta, read = srv.reg.meta, srv.reg.read
    if is_digest_ref(reference):
        row = await read(meta.manifest_by_digest, name, check_digest(reference))
    else:
        row = await read(meta.manifest_by_tag, name, check_tag(reference))
    if row is None:
        if not await read(meta.repo_exists, name):
            raise APIError("NAME_UNKNOWN", detail={"name": name})
        raise APIError("MANIFEST_UNKNOWN", detail={"reference": reference})
    return row


async def _negotiate(srv: "Server", name: str, reference: str, row: ManifestRow,
                     accept: set[str]) -> ManifestRow:
    """A client that cannot read what is stored: for a tagged index, the
    child for this platform in a type it accepts (what distribution does for
    old Docker clients); OCI types it cannot read are unknown to it."""
    if row.media_type in mt.INDEXES and not is_digest_ref(reference):
        data = await srv.reg.manifest_bytes(row.digest, row.size)
        try:
            index = parse_manifest(data or b"", row.media_type, row.digest)
        except ManifestError:
            index = None
        if isinstance(index, Index):
            for want in (Platform.host(), Platform("linux", "amd64")):
                for d in index.manifests:
                    if d.platform and d.platform.matches(want) and d.media_type in accept:
                        child = await srv.reg.read(srv.reg.meta.manifest_by_digest, name, d.digest)
                        if child is not None:
                            return child
    if row.media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX):
        raise APIError("MANIFEST_UNKNOWN", f"{row.media_type} found, but the Accept header does not allow it",
                       {"reference": reference})
    return row


async def get_manifest(srv: "Server", request: web.Request, name: str, reference: str) -> web.StreamResponse:
    if srv.proxy is not None and srv.proxy.serves(name):
        row = await srv.proxy.manifest(name, reference)
    else:
        row = await _lookup(srv, name, reference)
    accept = accepted_types(request)
    if accept is not None and row.media_type not in accept:
        row = await _negotiate(srv, name, reference, row, accept)
    data = await srv.reg.manifest_bytes(row.digest, row.size)
    if data is None:
        raise APIError("MANIFEST_UNKNOWN", "manifest data is missing", {"reference": reference})
    if request.method == "GET":
        srv.event(request, PULL, repository=name, target=MANIFEST, digest=row.digest, media_type=row.media_type,
                  size=row.size, tag=None if is_digest_ref(reference) else reference)
    # HEAD: aiohttp sends the headers (Content-Length included) and no body.
    return web.Response(body=data, headers={**API_VERSION, "Content-Type": row.media_type,
                                            "Docker-Content-Digest": row.digest, "ETag": f'"{row.digest}"'})


def describe(repo: str, m: Manifest | Index) -> NewManifest:
    if isinstance(m, Index):
        refs = [(d.digest, REF_MANIFEST) for d in m.manifests]
        artifact_type = m.artifact_type or None
    else:
        refs = [(d.digest, REF_BLOB) for d in m.references()
                if not (d.urls and d.media_type in _FOREIGN)]
        artifact_type = m.artifact_type or m.config.media_type
    return NewManifest(repo, m.digest, m.media_type, len(m.raw), m.subject.digest if m.subject else None,
                       artifact_type, m.annotations or None, list(dict.fromkeys(refs)))


class _Gone(Exception):
    """The bytes committed before the transaction were collected meanwhile."""


async def store(reg, new: NewManifest, tags: list[str], raw: bytes, guard=None,
                require_refs: bool = True) -> list[str]:
    """Commit the bytes to the content store first (a fresh modification time:
    garbage collection's grace covers them), then record the manifest in one
    short transaction that looks for them again (gc cannot delete them there):
    gone meanwhile (a collector with a shorter grace), they are written again.
    A refused manifest leaves its bytes unlinked, for gc. `require_refs=False`:
    a pull-through cache stores manifests before their blobs."""
    blocking = reg.store.blocking

    def place() -> None:
        if not blocking.has(new.digest):
            raise _Gone
    while True:
        await reg.store.put(raw, new.digest)
        try:
            return await reg.run(reg.meta.put_manifest, new, tags, place, guard, require_refs)
        except _Gone:
            continue


def validate(name: str, reference: str, raw: bytes, content_type: str | None) -> tuple[Manifest | Index, str]:
    """Digest and parse the body (CPU work: off the loop for big manifests)."""
    if is_digest_ref(reference):
        digest = digests.of_bytes(raw, digests.parse(reference).algorithm)
        if digest != reference:
            raise APIError("DIGEST_INVALID", f"manifest has digest {digest}, not {reference}",
                           {"expected": reference, "actual": digest})
    else:
        digest = digests.of_bytes(raw)
    try:
        m = parse_manifest(raw, content_type, digest)
    except ManifestError as e:
        raise APIError("MANIFEST_INVALID", str(e)) from None
    for text in (m.artifact_type, m.config.media_type if isinstance(m, Manifest) else None):
        if text and not text.isascii():  # a media type is ASCII (RFC 6838); lone surrogates cannot even be stored
            raise APIError("MANIFEST_INVALID", f"media type {text!r} is not ASCII")
    return m, digest


async def put_manifest(srv: "Server", request: web.Request, name: str, reference: str) -> web.StreamResponse:
    reg = srv.reg
    if is_digest_ref(reference):
        check_digest(reference)
        tags = [check_tag(t) for t in request.query.getall("tag", [])]
    else:
        tags = [check_tag(reference)]
    raw = await read_limited(request, reg.config.limits, reg.config.limits.max_manifest_bytes, "MANIFEST_INVALID",
                             "manifest")
    content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip() or None
    if len(raw) > SMALL_MANIFEST:
        m, digest = await reg.run(validate, name, reference, raw, content_type)
    else:
        m, digest = validate(name, reference, raw, content_type)
    new = describe(name, m)
    guard = srv.policies.manifest_guard(name, digest, len(raw), tags)
    missing = await store(reg, new, tags, raw, guard)
    if missing:
        return error_response(*[APIError("MANIFEST_BLOB_UNKNOWN", f"unknown blob or manifest {d}", {"digest": d})
                                for d in missing])
    reg.manifests.put(digest, raw)
    for tag in tags or [None]:
        srv.event(request, PUSH, repository=name, target=MANIFEST, digest=digest, media_type=m.media_type,
                  size=len(raw), tag=tag)
    headers = CIMultiDict({"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest})
    if m.subject is not None:
        headers["OCI-Subject"] = m.subject.digest
    if is_digest_ref(reference):
        for t in tags:
            headers.add("OCI-Tag", t)
    resp = empty(201)
    resp.headers.extend(headers)
    return resp


async def delete_manifest(srv: "Server", request: web.Request, name: str, reference: str) -> web.StreamResponse:
    await remove(srv, request, name, reference)
    return empty(202)


async def remove(srv: "Server", request: web.Request, name: str, reference: str) -> None:
    """Delete a manifest (by digest) or just a tag: the one delete path of the API and
    the web UI. Immutable tags refuse; the event names what went."""
    reg = srv.reg
    if not reg.config.delete_enabled:
        raise APIError("UNSUPPORTED", "deletes are disabled on this registry")
    if is_digest_ref(reference):
        digest = check_digest(reference)
        ok = await reg.run(reg.meta.delete_manifest, name, digest, srv.policies.delete_manifest_guard(name, digest))
    else:
        srv.policies.check_tag_delete(name, check_tag(reference))
        ok = await reg.run(reg.meta.delete_tag, name, reference)
    if not ok:
        raise APIError("MANIFEST_UNKNOWN", detail={"reference": reference})
    srv.event(request, DELETE, repository=name, target=MANIFEST,
              **({"digest": reference} if is_digest_ref(reference) else {"tag": reference}))
