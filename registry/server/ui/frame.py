"""The UI's plumbing: who is viewing, rendering (Jinja2, autoescaped), the
security headers every UI answer carries, and CSRF checks for forms.

A viewer is the account of their sign-in session, else whoever the API's
authenticator says the request comes from (anonymous without credentials):
the same accounts and the same access rules as the API, no second path.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from storage.units import human_size

from ...errors import APIError
from ..auth import ANONYMOUS_PRINCIPAL, PRINCIPAL, Principal
from .images import Summaries
from .sessions import ANON_COOKIE, CSRF_FIELD, SESSION_COOKIE, Sessions, new_anonymous_binding

if TYPE_CHECKING:
    from ..app import Server

log = logging.getLogger("soko.registry.ui")
HERE = Path(__file__).parent
COOKIE_PATH = "/ui"
MAX_FORM = 64 * 1024  # bytes; the UI's forms carry a token, a name and a tag or two
SECURITY_HEADERS = {
    # No inline script or style anywhere: JS and CSS are files under /ui/static/.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Viewer:
    """Who is looking at a page, and what binds their forms."""
    principal: Principal
    session: str | None  # the session token, when signed in through the form
    binding: str  # the cookie value CSRF tokens are bound to
    new_binding: bool  # the anonymous binding cookie must be set on the answer
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def anonymous(self) -> bool:
        return self.principal.account.anonymous


def fmt_time(epoch: float | None) -> str:
    if not epoch:
        return "never"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="seconds")


def short_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}"


def repo_url(name: str) -> str:
    return "/ui/repositories/" + quote(name, safe="/")


def image_url(name: str, reference: str) -> str:
    sep = "@" if ":" in reference else ":"
    return "/ui/images/" + quote(name, safe="/") + sep + quote(reference, safe=":")


class UI:
    def __init__(self, srv: "Server"):
        self.srv = srv
        opts = srv.config.ui
        self.sessions = Sessions(opts.session_ttl, opts.session_idle)
        self.summaries = Summaries(srv.reg.store.blocking)
        self.disk_usage: tuple[float, tuple, tuple[int, int]] | None = None  # (when, key, (files, bytes)): pages.py
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(size=lambda n: human_size(int(n or 0), sep=" "), time=fmt_time, iso=iso_time,
                                short=short_digest)
        self.env.globals.update(repo_url=repo_url, image_url=image_url, csrf_field=CSRF_FIELD, urlencode=urlencode)

    # -- who -------------------------------------------------------------------------------------
    async def viewer(self, request: web.Request) -> Viewer:
        principal, token = await self._principal(request)
        request[PRINCIPAL] = principal  # events name the actor
        if token is not None:
            return Viewer(principal, token, token, False, self.sessions.csrf(token))
        binding = request.cookies.get(ANON_COOKIE)
        fresh = not binding or len(binding) > 64
        if fresh:
            binding = new_anonymous_binding()
        return Viewer(principal, None, binding, fresh, self.sessions.csrf(binding))

    async def _principal(self, request: web.Request) -> tuple[Principal, str | None]:
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token)
        if session is not None:
            directory = self.srv.directory
            directory.refresh()
            account = directory.account(session.account)
            if account is not None and not account.expired() \
                    and directory.fingerprint(session.account) == session.fingerprint:
                return Principal(account, None, "session"), token
            self.sessions.drop(token)  # the password changed, or the account went or expired
        try:
            return await self.srv.auth.identify(request), None
        except APIError:  # credentials that do not hold: a page for anonymous
            return ANONYMOUS_PRINCIPAL, None

    def may(self, viewer: Viewer, action: str, repo: str) -> bool:
        return self.srv.auth.allows(viewer.principal, "repository", repo, action)

    def pull_filter(self, viewer: Viewer) -> Callable[[str], bool] | None:
        """What limits listings for `viewer` (None: it sees every repository)."""
        if self.srv.access.open:
            return None
        return lambda repo: self.may(viewer, "pull", repo)

    def can_delete(self, viewer: Viewer, repo: str) -> bool:
        try:
            self.srv.check_writable(repo)
        except APIError:
            return False
        return self.srv.config.delete_enabled and self.may(viewer, "delete", repo)

    @property
    def has_accounts(self) -> bool:
        return not self.srv.directory.empty

    # -- answers ---------------------------------------------------------------------------------
    def render(self, request: web.Request, viewer: Viewer, template: str, status: int = 200,
               **values: Any) -> web.Response:
        page = self.env.get_template(template).render(
            viewer=viewer, ui=self, path=request.path_qs, host=request.host, **values)
        resp = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
        self.finish(request, viewer, resp)
        return resp

    def finish(self, request: web.Request, viewer: Viewer | None, resp: web.StreamResponse) -> None:
        """Headers every UI answer carries; the anonymous CSRF cookie when it is new."""
        resp.headers.update(SECURITY_HEADERS)
        resp.headers.setdefault("Cache-Control", "no-store")
        if viewer is not None and viewer.new_binding:
            self.set_cookie(request, resp, ANON_COOKIE, viewer.binding, None)

    def set_cookie(self, request: web.Request, resp: web.StreamResponse, name: str, value: str,
                   max_age: float | None) -> None:
        resp.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.secure,
                        max_age=None if max_age is None else int(max_age))

    def redirect(self, request: web.Request, viewer: Viewer | None, location: str) -> web.Response:
        resp = web.Response(status=303, headers={"Location": location})
        self.finish(request, viewer, resp)
        return resp

    def error(self, request: web.Request, viewer: Viewer, status: int, title: str, message: str) -> web.Response:
        return self.render(request, viewer, "error.html", status=status, title=title, message=message)

    async def form(self, request: web.Request, viewer: Viewer) -> dict[str, str] | None:
        """The POSTed form when its CSRF token is right (None: refuse it) and it comes from here."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and origin != f"{request.scheme}://{request.host}":
            return None
        if (request.content_length or 0) > MAX_FORM:
            return None
        try:  # a form is a few hundred bytes: one that dawdles is dropped, as the API drops slow bodies
            data = await asyncio.wait_for(request.post(), self.srv.config.limits.body_timeout)
        except asyncio.TimeoutError:
            return None
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        if not self.sessions.csrf_ok(viewer.binding if not viewer.new_binding else None, fields.get(CSRF_FIELD)):
            return None
        return fields

    def guarded(self, handler: Callable[["UI", web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        """`handler` as a route: headers on every answer, a page (not a traceback) for a failure."""
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(self, request)
            except web.HTTPException:
                raise
            except Exception:
                log.exception("%s %s failed", request.method, request.path)
                viewer = Viewer(ANONYMOUS_PRINCIPAL, None, "", False, "")
                return self.error(request, viewer, 500, "Something went wrong",
                                  "The server could not show this page; its log says why.")
        return run
