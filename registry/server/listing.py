"""Read-only listings: `/v2/`, tags (n/last/Link), `_catalog` and referrers."""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aiohttp import web

from storage import mediatypes as mt

from ..errors import APIError
from .auth import PRINCIPAL
from .respond import check_digest, json_response, page_size

if TYPE_CHECKING:
    from .app import Server


async def base(srv: "Server", request: web.Request) -> web.StreamResponse:
    return json_response({})


async def _page(request: web.Request, srv: "Server", fetch, path: str) -> tuple[list[str], dict[str, str]]:
    """One page of a lexically ordered listing; `fetch(last, limit)` queries
    it (in a worker thread: a page may be long)."""
    n = page_size(request, srv.reg.config.limits.tags_page_max)
    last = request.query.get("last")
    if n == 0:
        return [], {}
    items = await srv.reg.run(fetch, last, None if n is None else n + 1)
    headers: dict[str, str] = {}
    if n is not None and len(items) > n:
        items = items[:n]
        headers["Link"] = f'<{path}?{urlencode({"n": n, "last": items[-1]})}>; rel="next"'
    return items, headers


async def tags_list(srv: "Server", request: web.Request, name: str) -> web.StreamResponse:
    meta = srv.reg.meta
    if not await srv.reg.read(meta.repo_exists, name):
        raise APIError("NAME_UNKNOWN", detail={"name": name})
    tags, headers = await _page(request, srv, lambda last, limit: meta.tags(name, last, limit), f"/v2/{name}/tags/list")
    return json_response({"name": name, "tags": tags}, headers=headers)


def filtered(fetch, keep, batch: int = 500):
    """`fetch(last, limit)` with only what `keep` lets through, still in order and paged."""
    def page(last: str | None, limit: int | None) -> list[str]:
        out: list[str] = []
        while limit is None or len(out) < limit:
            chunk = fetch(last, batch if limit is None else max(batch, limit))
            out += keep(chunk)
            if not chunk or len(chunk) < (batch if limit is None else max(batch, limit)):
                break
            last = chunk[-1]
        return out if limit is None else out[:limit]
    return page


async def catalog(srv: "Server", request: web.Request) -> web.StreamResponse:
    fetch = srv.reg.meta.repositories
    keep = srv.visible(request[PRINCIPAL])
    repos, headers = await _page(request, srv, fetch if keep is None else filtered(fetch, keep), "/v2/_catalog")
    return json_response({"repositories": repos}, headers=headers)


async def referrers(srv: "Server", request: web.Request, name: str, digest: str) -> web.StreamResponse:
    check_digest(digest)
    artifact_type = request.query.get("artifactType")
    refs = await srv.reg.run(srv.reg.meta.referrers, name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type is not None else {}
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [r.to_json() for r in refs]}
    return json_response(index, content_type=mt.OCI_INDEX, headers=headers)
