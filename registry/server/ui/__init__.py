"""The registry's web UI, served by `soko serve` itself under /ui/.

Server-rendered pages (Jinja2 with autoescaping everywhere), a little plain
JavaScript and CSS as static files (the Content-Security-Policy allows no
inline script or style), nothing fetched from elsewhere. Pages: repositories,
a repository, an image, the registry; signing in and out; deleting a tag.
`/` sends browsers (Accept prefers text/html) to /ui/; API clients there get
what they always got. `[ui] enabled = false` or `--no-ui` leaves all of it out.
"""
from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING

from aiohttp import web

from . import pages, signin
from .frame import HERE, UI

if TYPE_CHECKING:
    from ..app import Server

STATIC = HERE / "static"
_STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()}


def prefers_html(accept: str) -> bool:
    """Does this Accept header rank text/html at least as high as anything else? (a browser)"""
    best_html, best_other = 0.0, 0.0
    for part in accept.split(","):
        mtype, *params = (x.strip() for x in part.split(";"))
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        mtype = mtype.lower()
        if mtype in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
        elif mtype:
            best_other = max(best_other, q)
    return best_html > 0 and best_html >= best_other


async def _static(ui: UI, request: web.Request) -> web.StreamResponse:
    path = _STATIC_FILES.get(request.match_info["file"])
    if path is None:
        resp = web.Response(status=404, text="no such file")
        ui.finish(request, None, resp)
        return resp
    ctype = "image/svg+xml" if path.suffix == ".svg" else mimetypes.guess_type(path.name)[0]
    resp = web.Response(body=path.read_bytes(), content_type=ctype or "application/octet-stream",
                        headers={"Cache-Control": "public, max-age=300"})
    ui.finish(request, None, resp)
    return resp


async def _favicon(ui: UI, request: web.Request) -> web.StreamResponse:
    resp = web.Response(body=(STATIC / "favicon.svg").read_bytes(), content_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})
    ui.finish(request, None, resp)
    return resp


async def _to_ui(ui: UI, request: web.Request) -> web.StreamResponse:
    return ui.redirect(request, None, "/ui/")


def setup(app: web.Application, srv: "Server") -> None:
    """Add the UI's routes (before the API's catch-all route, which would take them)."""
    ui = UI(srv)

    async def root(request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and prefers_html(request.headers.get("Accept", "")):
            return await ui.guarded(_to_ui)(request)
        return await srv.dispatch(request)

    app.router.add_route("*", "/", root)
    r = app.router
    r.add_get("/favicon.ico", ui.guarded(_favicon))
    r.add_get("/ui", ui.guarded(_to_ui))
    r.add_get("/ui/", ui.guarded(pages.repositories))
    r.add_get("/ui/repositories/{name:.+}", ui.guarded(pages.repository))
    r.add_get("/ui/images/{ref:.+}", ui.guarded(pages.image))
    r.add_get("/ui/registry", ui.guarded(pages.registry))
    r.add_post("/ui/tags/delete", ui.guarded(pages.delete_tag))
    r.add_get("/ui/login", ui.guarded(signin.login_form))
    r.add_post("/ui/login", ui.guarded(signin.login))
    r.add_post("/ui/logout", ui.guarded(signin.logout))
    r.add_get("/ui/static/{file}", ui.guarded(_static))
