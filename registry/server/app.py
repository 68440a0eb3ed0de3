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
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import ClientPayloadError, http_exceptions, web

from ..errors import APIError
from . import blobs, listing, manifests, search, tokenservice, uploads
from .access import AccessControl
from .accounts import Directory
from .admission import CLIENT, EXHAUSTED, client_key, too_many
from .auth import ANONYMOUS_PRINCIPAL, PRINCIPAL, Authenticator, Principal
from .bodies import SlowClient, drop_slow
from .config import ServerConfig
from .core import Registry
from .events import Events
from .ingest import Uploads
from .metrics import ROUTE, UNKNOWN_ROUTE, Metrics, metrics_endpoint
from .policy import Policies
from .respond import check_name, error_response
from .tokens import Scope

log = logging.getLogger("soko.registry")
Handler = Callable[..., Awaitable[web.StreamResponse]]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Route:
    """An endpoint: its handlers by method and what a caller needs to use it.
    `access`: "repository" (pull to read; pull+push to write; delete to delete),
    "push" (pull+push whatever the method: upload sessions), "signed-in" (any
    credentials once the registry has accounts), "catalog" (signed in; the answer
    is filtered to what the caller may pull), "search" (the same, anonymous too:
    `docker search` sends no credentials it has no identity token for), or "public".
    `label`: the route in /metrics."""
    handlers: dict[str, Handler]
    access: str
    label: str


# re.S: a newline in a name or tag (%0A) must reach validation (400), not miss every route.
_ROUTES: list[tuple[re.Pattern[str], Route]] = [
    (re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$", re.S),
     Route({"GET": manifests.get_manifest, "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest, "DELETE": manifests.delete_manifest}, "repository",
           "/v2/{name}/manifests/{reference}")),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$", re.S),
     Route({"POST": uploads.post_upload}, "push", "/v2/{name}/blobs/uploads/")),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)$", re.S),
     Route({"GET": uploads.get_upload, "PATCH": uploads.patch_upload, "PUT": uploads.put_upload,
            "DELETE": uploads.delete_upload}, "push", "/v2/{name}/blobs/uploads/{uuid}")),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$", re.S),
     Route({"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob}, "repository",
           "/v2/{name}/blobs/{digest}")),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$", re.S),
     Route({"GET": listing.tags_list, "HEAD": listing.tags_list}, "repository", "/v2/{name}/tags/list")),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$", re.S),
     Route({"GET": listing.referrers}, "repository", "/v2/{name}/referrers/{digest}")),
]
_BASE = Route({"GET": listing.base, "HEAD": listing.base}, "signed-in", "/v2/")
_EXACT: dict[str, Route] = {
    "/v2/": _BASE, "/v2": _BASE,
    "/v1/v2/": _BASE,  # `docker search` pings <v1 endpoint>/v2/ to learn the challenge
    "/v2/_catalog": Route({"GET": listing.catalog}, "catalog", "/v2/_catalog"),
    "/v1/search": Route({"GET": search.search}, "search", "/v1/search"),
    "/v1/_ping": Route({"GET": search.ping, "HEAD": search.ping}, "public", "/v1/_ping"),
    "/token": Route({"GET": tokenservice.token, "POST": tokenservice.token}, "public", "/token"),
    # [metrics] access decides who may read it (the handler checks)
    "/metrics": Route({"GET": metrics_endpoint}, "public", "/metrics"),
}
# What a listing asks of an external issuer's token (soko's own tokens and Basic
# credentials are filtered per account instead).
_LISTING_SCOPES = {"catalog": Scope("registry", "catalog", ("*",)),
                   "search": Scope("registry", "catalog", ("search",))}


class Server:
    """Everything a handler needs: the registry state, upload sessions, who may do what."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.events = Events()
        self.metrics = Metrics()
        self.events.subscribe(self.metrics.on_event)
        self.directory = Directory(config)
        self.access = AccessControl(config, self.directory)
        self.auth = Authenticator(config, self.directory, self.access, self.events)
        self.policies = Policies(config)
        self.audit = None
        if config.audit_log:
            from .audit import AuditLog

            self.audit = AuditLog(config.audit_log)
            self.events.subscribe(self.audit)
        self.reg = Registry(config)
        self.uploads = Uploads(self.reg, self.metrics.counter(
            "socket_bodies", "Request bodies read straight from the socket (big uploads over plain HTTP)", []).inc)
        self.proxy = None
        if config.proxy is not None:
            from .proxy import Proxy

            self.proxy = Proxy(config.proxy, self.reg, self.metrics)
        self.notifier = None
        if config.notifications.active:
            from .notifier import Notifier

            self.notifier = Notifier(config.notifications.active, self.reg.root, self.metrics)
            self.events.subscribe(self.notifier)
        self._tasks: list[asyncio.Task] = []

    def bound(self, port: int) -> None:
        """The runner's socket is listening on `port`."""
        self.auth.bound(port)
        if self.notifier is not None:
            self.notifier.bound(port)

    def route(self, path: str) -> tuple[Route, dict[str, str]] | None:
        exact = _EXACT.get(path)
        if exact is not None:
            return exact, {}
        if path.startswith("/v2/"):
            for pattern, route in _ROUTES:
                m = pattern.fullmatch(path)  # `$` alone would allow a trailing newline
                if m:
                    return route, m.groupdict()
        return None

    def event(self, request: web.Request, action: str, **kw) -> None:
        """An event about this request, its principal as the actor."""
        principal = request.get(PRINCIPAL)
        self.events.request_event(request, principal.name if principal else "anonymous", action, **kw)

    def visible(self, principal: Principal) -> Callable[[list[str]], list[str]] | None:
        """What filters a listing for `principal` (None: it sees everything)."""
        if self.access.open or (principal.token is not None and not principal.token.own):
            return None
        return lambda repos: self.access.visible(principal.account, repos)

    def check_writable(self, name: str) -> None:
        """Refuse changes in read-only mode and to a pull-through cache's repositories."""
        if self.config.read_only:
            raise APIError("UNSUPPORTED", "the registry is in read-only mode")
        if self.proxy is not None and self.proxy.serves(name):
            raise APIError("UNSUPPORTED", f"{name} is a pull-through cache of {self.proxy.describe(name)}: "
                                          "it is read-only")

    def _needs(self, route: Route, method: str, params: dict[str, str]) -> list[Scope]:
        name = params.get("name", "")
        if route.access == "push" or (route.access == "repository" and method in WRITES and method != "DELETE"):
            return [Scope("repository", name, ("pull", "push"))]
        if route.access == "repository":
            return [Scope("repository", name, ("delete",) if method == "DELETE" else ("pull",))]
        return []

    def _gate(self, request: web.Request, principal: Principal, route: Route, params: dict[str, str]) -> None:
        if route.access == "public":
            return
        if route.access in ("signed-in", "catalog", "search"):
            scope = _LISTING_SCOPES.get(route.access)
            if self.auth.required and principal.via == "anonymous" and route.access != "search":
                raise self.auth.challenge(request, scopes=[scope] if scope else ())
            if scope is not None and principal.token is not None and not principal.token.own:
                self.auth.authorize(request, principal, [scope])
            return
        self.auth.authorize(request, principal, self._needs(route, request.method, params))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            found = self.route(request.path)
            if found is None:
                request[ROUTE] = UNKNOWN_ROUTE
                raise APIError("UNSUPPORTED", f"no such endpoint: {request.path}", status=404)
            route, params = found
            request[ROUTE] = route.label
            handler = route.handlers.get(request.method)
            if handler is None:
                raise APIError("UNSUPPORTED", f"{request.method} is not supported here",
                               headers={"Allow": ", ".join(sorted(route.handlers))})
            # public endpoints check what they need themselves (the token endpoint)
            principal = ANONYMOUS_PRINCIPAL if route.access == "public" else await self.auth.identify(request)
            request[PRINCIPAL] = principal
            request[CLIENT] = client_key(request, None if principal.account.anonymous else principal.name)
            if "name" in params:
                check_name(params["name"])
            if request.method in WRITES and route.access in ("repository", "push"):
                self.check_writable(params["name"])
            self._gate(request, principal, route, params)
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
                    await self.reg.run(gc.collect_store, self.reg.store.blocking, self.reg.meta, grace=opts.grace,
                                       untagged=opts.untagged, upload_ttl=opts.upload_ttl,
                                       busy_uploads=set(self.uploads.sessions), retention=self.config.retention,
                                       immutable=self.config.immutable)
                    next_gc = asyncio.get_running_loop().time() + interval
            except Exception:
                log.exception("housekeeping failed")

    async def start(self, app: web.Application) -> None:
        await self.reg.store.open()
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        if self.notifier is not None:
            await self.notifier.start({e.name for e in self.config.notifications.endpoints})

    async def stopping(self, app: web.Application) -> None:
        """Before aiohttp waits for the requests in progress: bodies read by
        threads end now (what arrived is kept), not when their clients finish."""
        self.uploads.socket_bodies.stop_all()

    async def stop(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.stop()
        if self.proxy is not None:
            await self.proxy.close()
        self.uploads.close_all()
        self.auth.close()
        if self.audit is not None:
            self.audit.close()
        await self.reg.store.close()
        self.reg.close()


SERVER = web.AppKey("soko_registry_server", Server)


def make_app(config: ServerConfig) -> web.Application:
    """The registry as an aiohttp Application (also usable in-process by tests)."""
    config.validate()
    srv = Server(config)
    app = web.Application()
    app[SERVER] = srv
    if config.ui.enabled:  # its routes go before the catch-all
        from .ui import setup as setup_ui

        setup_ui(app, srv)
    app.router.add_route("*", "/{tail:(?s:.*)}", srv.dispatch)
    app.on_startup.append(srv.start)
    app.on_shutdown.append(srv.stopping)
    app.on_cleanup.append(srv.stop)
    return app
