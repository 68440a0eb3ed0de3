"""`soko search HOST/TERM`: a registry's v1 search (`GET /v1/search`, Docker
Hub's shape, which soko serve answers), with the caller's credentials.

Docker Hub itself is not searched: it needs the internet, so a registry host
is required."""
from __future__ import annotations

import json
from dataclasses import dataclass

from storage.references import DEFAULT_DOMAIN

from .credentials import CredentialStore
from .errors import ProtocolError, UsageError
from .options import ClientOptions
from .session import RegistrySession

SEARCH_SCOPE = "registry:catalog:search"
MAX_LIMIT = 100
MAX_ANSWER = 4 * 1024 * 1024


@dataclass(frozen=True)
class SearchResult:
    name: str
    description: str = ""
    star_count: int = 0
    is_official: bool = False
    is_automated: bool = False


def split_term(term: str) -> tuple[str, str]:
    """`HOST/TERM` -> (host, term), with Docker's rule for what is a host
    (a dot, a colon, or `localhost` before the first slash)."""
    host, sep, rest = term.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost") or host in (DEFAULT_DOMAIN,
                                                                                    "index.docker.io"):
        raise UsageError(f"soko search needs a registry: HOST/TERM (e.g. localhost:5000/{term}); "
                         f"searching Docker Hub is not supported (it needs the internet)")
    return host, rest


async def search_async(term: str, limit: int = 25, options: ClientOptions | None = None) -> list[SearchResult]:
    options = options or ClientOptions()
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}")
    host, needle = split_term(term)
    creds = CredentialStore(options.docker_config).get(host)
    async with RegistrySession(host, options, creds) as sess:
        resp = await sess.request("GET", "/v1/search", scopes=[SEARCH_SCOPE], params={"q": needle, "n": str(limit)})
        async with resp:
            await sess.raise_for_status(resp, f"search of {host}")
            raw = await resp.read(MAX_ANSWER)
    try:
        body = json.loads(raw)
        results = body["results"]
        return [SearchResult(str(r["name"]), str(r.get("description") or ""), int(r.get("star_count") or 0),
                             bool(r.get("is_official")), bool(r.get("is_automated"))) for r in results]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(f"{host}: /v1/search answered something that is not a search result") from None
