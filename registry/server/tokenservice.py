"""`/token`: soko's own token endpoint (Docker's token spec and its OAuth2 form).

GET  /token?service=S&scope=...&account=A[&offline_token=true&client_id=C]
     with Basic credentials, or none (an anonymous token with what anonymous may);
POST /token  grant_type=password (username, password) or refresh_token
     (refresh_token), service, client_id, scope (space-separated), access_type=offline.

The answer holds `token` and `access_token` (the same JWT), `expires_in`,
`issued_at`, and a `refresh_token` when one was asked for (`offline_token=true`
or `access_type=offline`) by a signed-in account: `docker login` stores it as
its identity token and trades it for access tokens afterwards.
"""
from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import web

from ..errors import APIError
from .accounts import ANONYMOUS_ACCOUNT, Account
from .bodies import read_limited
from .events import LOGIN
from .jws import JWSError
from .respond import json_response
from .tokens import parse_scopes

if TYPE_CHECKING:
    from .app import Server

MAX_FORM = 64 * 1024


def _refused(srv: "Server", message: str) -> APIError:
    return APIError("UNAUTHORIZED", message, headers={"WWW-Authenticate": f'Basic realm="{srv.config.realm}"'})


def _bad(message: str) -> APIError:
    return APIError("BAD_REQUEST", message, status=400)


async def token(srv: "Server", request: web.Request) -> web.StreamResponse:
    auth = srv.auth
    if auth.issuer is None:
        raise APIError("UNSUPPORTED", "this registry issues no tokens", status=404)
    if request.method == "GET":
        q = {k: request.query.getall(k) for k in request.query}
        account = await _basic_account(srv, request)
        claimed = _one(q, "account")
        if claimed and not account.anonymous and claimed != account.name:
            raise _bad(f"account {claimed!r} does not match the credentials")
        offline = _one(q, "offline_token") == "true"
    elif request.method == "POST":
        raw = await read_limited(request, srv.config.limits, MAX_FORM, "BAD_REQUEST", "token request")
        q = parse_qs(raw.decode(errors="replace"), keep_blank_values=True)
        account = await _grant_account(srv, request, q)
        offline = _one(q, "access_type") == "offline"
    else:
        raise APIError("UNSUPPORTED", f"{request.method} is not supported here", status=405,
                       headers={"Allow": "GET, POST"})
    service = _one(q, "service")
    if service and service != auth.service:
        raise _bad(f"unknown service {service!r} (this registry is {auth.service!r})")
    scopes = parse_scopes(q.get("scope", []))
    access = srv.access.grant(account, scopes)
    now = time.time()
    jwt = auth.issuer.access_token(account.name, access, now)
    body = {"token": jwt, "access_token": jwt, "expires_in": int(auth.issuer.expiration),
            "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(
                timespec="seconds").replace("+00:00", "Z")}
    if scopes:
        body["scope"] = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
    if offline and not account.anonymous:
        fingerprint = srv.directory.fingerprint(account.name)
        if fingerprint is not None:
            body["refresh_token"] = auth.issuer.refresh_token(account.name, fingerprint)
    return json_response(body, headers={"Cache-Control": "no-store"})


def _one(q: dict[str, list[str]], name: str) -> str | None:
    values = q.get(name)
    return values[-1] if values else None


async def _basic_account(srv: "Server", request: web.Request) -> Account:
    header = request.headers.get("Authorization")
    if not header:
        return ANONYMOUS_ACCOUNT
    if header[:6].lower() != "basic ":
        raise _refused(srv, "the token endpoint takes Basic credentials")
    try:
        return await srv.auth.basic(request, header)
    except APIError as e:
        if e.code == "UNAUTHORIZED":
            raise _refused(srv, "incorrect username or password") from None
        raise


async def _grant_account(srv: "Server", request: web.Request, q: dict[str, list[str]]) -> Account:
    grant = _one(q, "grant_type")
    if grant == "password":
        user, password = _one(q, "username"), _one(q, "password")
        if not user or password is None:
            raise _bad("the password grant needs username and password")
        try:
            return await srv.auth.login(request, user, password)
        except APIError as e:
            if e.code == "UNAUTHORIZED":
                raise _refused(srv, "incorrect username or password") from None
            raise
    if grant == "refresh_token":
        value = _one(q, "refresh_token")
        if not value:
            raise _bad("the refresh_token grant needs refresh_token")
        assert srv.auth.issuer is not None
        try:
            name = srv.auth.issuer.check_refresh(value, srv.directory.fingerprint)
        except JWSError as e:
            srv.events.request_event(request, "?", LOGIN, outcome="failed", detail=f"refresh token: {e}")
            raise _refused(srv, f"invalid refresh token: {e}") from None
        account = srv.directory.account(name)
        if account is None or account.expired():
            raise _refused(srv, f"account {name} is no longer valid")
        return account
    raise _bad(f"unsupported grant_type {grant!r} (password or refresh_token)")
