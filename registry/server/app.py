"""The aiohttp application: one catch-all route and a small dispatcher.

Repository names contain slashes, so each endpoint is recognised by how the
path ends (`/manifests/<ref>`, `/blobs/uploads/<id>`, ...), the name being
everything before. Authentication, read-only mode and name validation happen
here, once, before a handler runs; handlers raise APIError and the
dispatcher turns it into the spec's JSON error body.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Awaitable, Callable

from aiohttp import ClientPayloadError, http_exceptions, web

from ..errors import APIError
from . import blobs, listing, manifests, uploads
from .admission import CLIENT, EXHAUSTED, client_key, too_many
from .auth import BasicAuth
from .bodies import SlowClient, drop_slow
from .config import ServerConfig
from .core import Registry
from .ingest import Uploads
from .respond import check_name, error_response

log = logging.getLogger("soko.registry")
Handler = Callable[..., Awaitable[web.StreamResponse]]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# re.S: a newline in a name or tag (%0A) must reach validation (400), not miss every route.
_ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$", re.S),
     {"GET": manifests.get_manifest, "HEAD": manifests.get_manifest,
      "PUT": manifests.put_manifest, "DELETE": manifests.delete_manifest}),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$", re.S), {"POST": uploads.post_upload}),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)$", re.S),
     {"GET": uploads.get_upload, "PATCH": uploads.patch_upload, "PUT": uploads.put_upload,
      "DELETE": uploads.delete_upload}),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$", re.S),
     {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob}),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$", re.S), {"GET": listing.tags_list, "HEAD": listing.tags_list}),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$", re.S), {"GET": listing.referrers}),
]
_BASE: dict[str, Handler] = {"GET": listing.base, "HEAD": listing.base}
_CATALOG: dict[str, Handler] = {"GET": listing.catalog}


class Server:
    """Everything a handler needs: the registry state, upload sessions, auth."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.reg = Registry(config)
        self.uploads = Uploads(self.reg)
        self.auth = BasicAuth(config.htpasswd, config.realm, config.limits.max_auth_pending) \
            if config.htpasswd else None
        self.readers = frozenset(config.readers)
        self._tasks: list[asyncio.Task] = []

    async def authenticate(self, request: web.Request) -> str | None:
        if self.auth is None:
            return None
        return await self.auth.authenticate(request.headers.get("Authorization"), client_key(request, None))

    def route(self, path: str) -> tuple[dict[str, Handler], dict[str, str]] | None:
        if path in ("/v2/", "/v2"):
            return _BASE, {}
        if path == "/v2/_catalog":
            return _CATALOG, {}
        for pattern, handlers in _ROUTES:
            m = pattern.fullmatch(path)  # `$` alone would allow a trailing newline
            if m:
                return handlers, m.groupdict()
        return None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            found = self.route(request.path)
            if found is None:
                raise APIError("UNSUPPORTED", f"no such endpoint: {request.path}", status=404)
            handlers, params = found
            user = await self.authenticate(request)
            request[CLIENT] = client_key(request, user)
            handler = handlers.get(request.method)
            if handler is None:
                raise APIError("UNSUPPORTED", f"{request.method} is not supported here",
                               headers={"Allow": ", ".join(sorted(handlers))})
            if request.method in WRITES:
                if self.config.read_only:
                    raise APIError("UNSUPPORTED", "the registry is in read-only mode")
                if user is not None and user in self.readers:
                    raise APIError("DENIED", f"user {user!r} may only pull")
            if "name" in params:
                check_name(params["name"])
            return await handler(self, request, **params)
        except SlowClient as e:
            log.info("slow client dropped: %s %s from %s: %s", request.method, request.path, request.remote, e)
            return await drop_slow(request, e)
        except APIError as e:
            return error_response(e)
        except (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError, http_exceptions.HttpProcessingError) \
                as e:  # the client went away mid-body: nobody to answer
            log.info("incomplete request: %s %s: %s", request.method, request.path, e)
            return error_response(APIError("BLOB_UPLOAD_INVALID", f"incomplete request body: {e}"))
        except Exception as e:  # a bug or a broken disk: answer 500, keep serving
            if isinstance(e, OSError) and e.errno in EXHAUSTED:
                log.warning("%s %s: out of resources: %s", request.method, request.path, e)
                return error_response(too_many("the server is out of resources"))
            log.exception("%s %s failed", request.method, request.path)
            return error_response(APIError("UNKNOWN", f"internal error: {type(e).__name__}", status=500))

    async def _housekeeping(self) -> None:
        """Forget idle upload sessions; run garbage collection when configured."""
        from . import gc

        interval = self.config.gc.interval
        next_gc = asyncio.get_running_loop().time() + interval if interval else None
        while True:
            await asyncio.sleep(min(60.0, interval) if interval else 60.0)
            try:
                self.uploads.close_idle()
                if next_gc is not None and asyncio.get_running_loop().time() >= next_gc:
                    opts = self.config.gc
                    await self.reg.run(gc.collect_store, self.reg.blobs, self.reg.meta, grace=opts.grace,
                                       untagged=opts.untagged, upload_ttl=opts.upload_ttl,
                                       busy_uploads=set(self.uploads.sessions))
                    next_gc = asyncio.get_running_loop().time() + interval
            except Exception:
                log.exception("housekeeping failed")

    async def start(self, app: web.Application) -> None:
        self._tasks.append(asyncio.create_task(self._housekeeping()))

    async def stop(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.uploads.close_all()
        if self.auth is not None:
            self.auth.close()
        self.reg.close()


SERVER = web.AppKey("soko_registry_server", Server)


def make_app(config: ServerConfig) -> web.Application:
    """The registry as an aiohttp Application (also usable in-process by tests)."""
    config.validate()
    srv = Server(config)
    app = web.Application()
    app[SERVER] = srv
    app.router.add_route("*", "/{tail:(?s:.*)}", srv.dispatch)
    app.on_startup.append(srv.start)
    app.on_cleanup.append(srv.stop)
    return app
