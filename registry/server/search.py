"""`GET /v1/search?q=&n=&page=`: Docker Hub's v1 search, which `docker search
HOST/term` calls, over repository names (a case-insensitive substring match),
listing only what the caller may pull. `/v1/_ping` answers the ping Docker
sends before it searches."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import APIError
from .auth import PRINCIPAL
from .respond import json_response

if TYPE_CHECKING:
    from .app import Server

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_RESULTS = 10000  # names looked at for one query
_NUMBER = re.compile(r"[0-9]{1,6}")


def _number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise APIError("PAGINATION_NUMBER_INVALID", f"invalid {name}={raw[:20]!r} (want {low}..{high})",
                       {name: raw[:20]})
    return int(raw)


async def search(srv: "Server", request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "")
    size = _number(request, "n", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _number(request, "page", 1, 1, 100000)
    names = await srv.reg.run(srv.reg.meta.repositories_like, query.strip(), MAX_RESULTS)
    keep = srv.visible(request[PRINCIPAL])
    if keep is not None:
        names = keep(names)
    start = (page - 1) * size
    results = [{"name": n, "description": "", "star_count": 0, "is_official": False, "is_automated": False,
                "is_trusted": False} for n in names[start:start + size]]
    return json_response({"query": query, "num_results": len(names), "num_pages": math.ceil(len(names) / size),
                          "page": page, "page_size": size, "results": results})


async def ping(srv: "Server", request: web.Request) -> web.StreamResponse:
    return json_response({"standalone": True}, headers={"X-Docker-Registry-Standalone": "true"})
