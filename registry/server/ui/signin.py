"""Signing in and out of the UI, with the registry's own accounts (htpasswd and
config users, robots): the API's authenticator checks the password (throttled
bcrypt, a login event either way); a session cookie remembers the result."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...errors import APIError
from .sessions import SESSION_COOKIE

NO_ACCOUNTS = "This registry has no accounts: everyone may use it without signing in."

if TYPE_CHECKING:
    from .frame import UI


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of this UI, never another site."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


async def login_form(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    message = "" if ui.has_accounts else NO_ACCOUNTS
    return ui.render(request, viewer, "login.html", next=safe_next(request.query.get("next")), message=message,
                     username="")


async def login(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    form = await ui.form(request, viewer)
    if form is None:
        return ui.render(request, viewer, "login.html", status=403, next="/ui/", username="",
                         message="The form had expired or was not sent from this page; please try again.")
    username, password = form.get("username", "")[:256], form.get("password", "")[:1024]
    target = safe_next(form.get("next"))
    if not ui.has_accounts:
        return ui.render(request, viewer, "login.html", status=400, next=target, username=username,
                         message=NO_ACCOUNTS)
    try:
        account = await ui.srv.auth.login(request, username, password)
    except APIError as e:
        status = 429 if e.code == "TOOMANYREQUESTS" else 200
        message = "Too many attempts; wait a little and try again." if status == 429 \
            else "Wrong user name or password."
        return ui.render(request, viewer, "login.html", status=status, next=target, username=username,
                         message=message)
    ui.sessions.drop(viewer.session)  # a new token at every sign-in (no session fixation)
    token = ui.sessions.create(account.name, ui.srv.directory.fingerprint(account.name))
    resp = ui.redirect(request, None, target)
    ui.set_cookie(request, resp, SESSION_COOKIE, token, ui.sessions.ttl)
    return resp


async def logout(ui: "UI", request: web.Request) -> web.StreamResponse:
    viewer = await ui.viewer(request)
    form = await ui.form(request, viewer)
    if form is None:
        return ui.error(request, viewer, 403, "Refused", "The form was not sent from this registry's page "
                                                         "(its CSRF token is missing or wrong). You are still "
                                                         "signed in.")
    ui.sessions.drop(viewer.session)
    resp = ui.redirect(request, None, "/ui/")
    resp.del_cookie(SESSION_COOKIE, path="/ui")
    return resp
