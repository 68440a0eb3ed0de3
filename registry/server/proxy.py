"""Pull-through cache: repositories whose content comes from an upstream
registry ([proxy], `soko serve --proxy URL`), fetched on first pull and kept.

- A tag is served from the cache while it is younger than `ttl`; after that
  one HEAD upstream tells whether it still names the same manifest (then the
  cache serves it again) or another one (fetched, verified and stored).
- A manifest asked by digest, and a blob, come from the cache when present.
- A blob not cached yet is fetched once, whatever the number of clients
  asking meanwhile, and streamed to all of them as it arrives (blobfetch.py).
- Upstream unreachable or failing: what is cached is served; what never was
  is a 502 naming the upstream and what went wrong. Upstream saying "no such
  thing" is a 404.
- Proxied repositories are read-only here: pushes and deletes are refused
  with 405 UNSUPPORTED, as distribution does in proxy mode.

Upstream credentials go through registry.client's session (Basic or token
auth, as the upstream's challenge says).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from registry.client.credentials import Credentials
from registry.client.errors import ClientError, NotFound
from registry.client.options import ClientOptions
from registry.client.remote import Repository
from registry.client.session import RegistrySession
from registry.client.wire import TransportError

from ..errors import APIError
from . import manifests
from .blobfetch import BlobFetch
from .core import Registry
from .meta import ManifestRow
from .metrics import Metrics
from .respond import API_VERSION, check_tag, is_digest_ref
from .sections import ProxyOptions

log = logging.getLogger("soko.registry")
T = TypeVar("T")
# Fail over to the cache quickly: one retry, short waits.
UPSTREAM_OPTIONS = dict(retries=1, backoff=0.2, max_backoff=1.0, connect_timeout=10.0, read_timeout=60.0, jobs=16,
                        user_agent="soko-registry-proxy", transport="aiohttp")  # the server's own loop


@dataclass
class Remote:
    """One upstream registry and the local names it serves."""
    url: str
    namespace: str | None  # None: every repository not under another upstream's namespace
    ttl: float
    creds: Credentials
    session: RegistrySession | None = None

    def upstream_name(self, name: str) -> str:
        return name[len(self.namespace) + 1:] if self.namespace else name

    async def repository(self, name: str) -> Repository:
        if self.session is None:
            parts = urlsplit(self.url)
            s = RegistrySession(parts.netloc, ClientOptions(**UPSTREAM_OPTIONS), self.creds, scheme=parts.scheme)
            self.session = await s.__aenter__()
        return Repository(self.session, self.upstream_name(name))


class Proxy:
    def __init__(self, opts: ProxyOptions, reg: Registry, metrics: Metrics):
        self.reg = reg
        self.remotes = sorted((Remote(u.remoteurl, u.namespace, opts.ttl if u.ttl is None else u.ttl,
                                      _creds(u.username, u.password)) for u in opts.upstreams),
                              key=lambda r: -len(r.namespace or ""))
        self.default = (Remote(opts.remoteurl, None, opts.ttl, _creds(opts.username, opts.password))
                        if opts.remoteurl else None)
        self.checked: dict[tuple[str, str], float] = {}  # (repository, tag) -> when upstream last confirmed it
        self.fetches: dict[str, BlobFetch] = {}
        self._inflight: dict[tuple, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.served = metrics.counter("proxy_requests", "Pull-through cache answers: hit (cached, fresh), "
                                      "revalidated (upstream confirmed the tag), fetched (from upstream), "
                                      "stale (upstream failing, cache served), failed", ["kind", "result"])

    def remote(self, name: str) -> Remote | None:
        """The upstream that serves repository `name`, if any."""
        for r in self.remotes:
            if name.startswith(r.namespace + "/"):
                return r
        return self.default

    def serves(self, name: str) -> bool:
        return self.remote(name) is not None

    def describe(self, name: str) -> str:
        r = self.remote(name)
        return f"{r.url}/{r.upstream_name(name)}" if r else name

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in [*self.remotes, *([self.default] if self.default else [])]:
            if r.session is not None:
                await r.session.__aexit__(None, None, None)
                r.session = None

    # -- manifests ---------------------------------------------------------------------------------------
    async def manifest(self, name: str, reference: str) -> ManifestRow:
        """The manifest `reference` names, from the cache or fetched into it."""
        meta = self.reg.meta
        if is_digest_ref(reference):
            row = await self.reg.read(meta.manifest_by_digest, name, reference)
            if row is not None:
                self.served.labels("manifest", "hit").inc()
                return row
            return await self._once(("manifest", name, reference), lambda: self._fetch_manifest(name, reference))
        tag = check_tag(reference)
        row = await self.reg.read(meta.manifest_by_tag, name, tag)
        remote = self.remote(name)
        if row is not None and time.monotonic() - self.checked.get((name, tag), -1e18) < remote.ttl:
            self.served.labels("manifest", "hit").inc()
            return row
        return await self._once(("tag", name, tag), lambda: self._revalidate(name, tag, row))

    async def _revalidate(self, name: str, tag: str, row: ManifestRow | None) -> ManifestRow:
        remote = self.remote(name)
        try:
            repo = await remote.repository(name)
            digest = await repo.manifest_exists(tag)
        except ClientError as e:
            return self._fallback("manifest", name, tag, row, e)
        if digest is None:
            if row is not None:  # gone upstream: gone here
                await self.reg.run(self.reg.meta.delete_tag, name, tag)
            self.checked.pop((name, tag), None)
            raise APIError("MANIFEST_UNKNOWN", f"{self.describe(name)}:{tag} is not there upstream",
                           {"reference": tag})
        if row is not None and row.digest == digest:
            self.checked[(name, tag)] = time.monotonic()
            self.served.labels("manifest", "revalidated").inc()
            return row
        known = await self.reg.read(self.reg.meta.manifest_by_digest, name, digest) if is_digest_ref(digest) else None
        if known is not None:  # moved to a manifest cached already
            await self._store_tag(name, tag, known)
            return known
        got = await self._fetch_manifest(name, tag, row)
        self.checked[(name, tag)] = time.monotonic()
        return got

    async def _fetch_manifest(self, name: str, reference: str, cached: ManifestRow | None = None) -> ManifestRow:
        remote = self.remote(name)
        try:
            fetched = await (await remote.repository(name)).get_manifest(reference)
        except NotFound:
            raise APIError("MANIFEST_UNKNOWN", f"{self.describe(name)}: {reference} is not there upstream",
                           {"reference": reference}) from None
        except ClientError as e:
            return self._fallback("manifest", name, reference, cached, e)
        tags = [] if is_digest_ref(reference) else [reference]
        m, digest = await self.reg.run(manifests.validate, name, fetched.digest, fetched.raw, fetched.media_type)
        new = manifests.describe(name, m)
        await manifests.store(self.reg, new, tags, fetched.raw, None, False)
        self.reg.manifests.put(digest, fetched.raw)
        self.served.labels("manifest", "fetched").inc()
        return ManifestRow(digest, m.media_type, len(fetched.raw))

    async def _store_tag(self, name: str, tag: str, row: ManifestRow) -> None:
        await self.reg.run(self.reg.meta.set_tag, name, tag, row.digest)
        self.checked[(name, tag)] = time.monotonic()
        self.served.labels("manifest", "revalidated").inc()

    def _fallback(self, kind: str, name: str, reference: str, cached: ManifestRow | None,
                  error: ClientError) -> ManifestRow:
        """Upstream trouble: the cached answer if there is one, else a 502 that says why."""
        if cached is not None:
            log.warning("proxy: %s unreachable, serving %s:%s from the cache: %s", self.remote(name).url, name,
                        reference, error)
            self.served.labels(kind, "stale").inc()
            return cached
        self.served.labels(kind, "failed").inc()
        raise upstream_error(self.describe(name), reference, error)

    # -- blobs ---------------------------------------------------------------------------------------------
    async def blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse | None:
        """A blob not linked in `name`: stream it from upstream (None once it is
        cached and linked here: the caller serves the file)."""
        reg = self.reg
        fetch = self.fetches.get(digest)
        if fetch is not None and fetch.done.done():
            fetch = None  # finished: the store has it (or it failed: start again)
        try:
            if fetch is None and await reg.store.has(digest):
                # cached through another repository: upstream must have it in this one too
                size = await self._upstream_size(name, digest)
                await reg.run(reg.meta.link_blob, name, digest, size, lambda: reg.store.blocking.has(digest))
                self.served.labels("blob", "revalidated").inc()
                return None
            if fetch is None:  # another request may have started one while the store answered
                fetch = self.fetches.get(digest)
                if fetch is not None and fetch.done.done():
                    fetch = None
            if fetch is None and request.method == "HEAD":
                size = await self._upstream_size(name, digest)
                return web.Response(headers={**API_VERSION, "Docker-Content-Digest": digest,
                                             "Content-Length": str(size), "Content-Type": "application/octet-stream"})
            if fetch is None:
                repo = await self.remote(name).repository(name)
                fetch = self.fetches[digest] = BlobFetch(reg, name, digest)
                task = asyncio.create_task(fetch.run(lambda: repo.open_blob(digest)))
                self._tasks.add(task)
                task.add_done_callback(lambda t: (self._tasks.discard(t), self.fetches.pop(digest, None)))
                self.served.labels("blob", "fetched").inc()
            if fetch.repo != name:  # fetched for another repository: link it here once it is stored
                await asyncio.shield(fetch.done)
                return await self.blob(request, name, digest)
            if request.method == "HEAD" or "Range" in request.headers:
                await asyncio.shield(fetch.done)  # then served from the store
                return None
            return await fetch.stream(request)
        except APIError:
            raise
        except NotFound:
            raise APIError("BLOB_UNKNOWN", f"{digest} is not in {self.describe(name)}", {"digest": digest}) from None
        except (ClientError, TransportError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.served.labels("blob", "failed").inc()
            raise upstream_error(self.describe(name), digest, e) from None

    async def _upstream_size(self, name: str, digest: str) -> int:
        try:
            size = await (await self.remote(name).repository(name)).blob_size(digest)
        except ClientError as e:
            raise upstream_error(self.describe(name), digest, e) from None
        if size is None:
            raise APIError("BLOB_UNKNOWN", f"{digest} is not in {self.describe(name)}", {"digest": digest})
        if size < 0:
            info = await self.reg.store.stat(digest)
            size = info.size if info is not None else 0
        return size

    # -- one request upstream for many clients ---------------------------------------------------------------
    async def _once(self, key: tuple, make: Callable[[], Awaitable[T]]) -> T:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut
            fut.add_done_callback(lambda f: self._inflight.pop(key, None))
        return await asyncio.shield(fut)


def upstream_error(what: str, reference: str, error: Any) -> APIError:
    sep = "@" if is_digest_ref(reference) else ":"
    return APIError("UNKNOWN", f"pull-through cache: {what}{sep}{reference} is not cached here and the upstream "
                               f"failed: {error}", {"upstream": what}, status=502)


def _creds(username: str | None, password: str | None) -> Credentials:
    return Credentials(username or "", password or "")
