"""Registry authentication: anonymous, Basic, and Bearer tokens.

The Bearer flow is the Docker token specification: a 401 carries
`WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client asks
the realm for a token for the scopes it needs (with Basic credentials, or an
identity token through the OAuth2 POST form) and sends it as
`Authorization: Bearer`. Tokens are cached per set of scopes and fetched
again shortly before `expires_in` runs out (60 s when the server is silent).
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import urlencode

from . import wire
from .credentials import Credentials
from .errors import AuthenticationRequired, ClientError, ProtocolError

DEFAULT_EXPIRY = 60.0
FORM = "application/x-www-form-urlencoded"
MAX_ANSWER = 1 << 20  # a token answer longer than this is no token answer
CLIENT_ID = "soko"

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass
class Challenge:
    """One challenge of a WWW-Authenticate header."""
    scheme: str                      # "bearer" or "basic", lower case
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value; several challenges may share it."""
    out: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = re.match(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)", text[pos:])
        if not m:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM_RE.match(text, pos)
            if not pm:
                break
            # a bare word followed by space (not "=") starts the next challenge
            params[pm.group(1).lower()] = (pm.group(2).replace('\\"', '"') if pm.group(2) is not None
                                           else pm.group(3))
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def pick_challenge(header: str) -> Challenge | None:
    found = parse_challenges(header)
    for scheme in ("bearer", "basic"):
        for c in found:
            if c.scheme == scheme:
                return c
    return None


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def scope_for(repository: str, actions: Iterable[str]) -> str:
    return f"repository:{repository}:{','.join(sorted(set(actions)))}"


@dataclass
class _Token:
    """A bearer token and when to fetch another."""
    value: str
    expires_at: float
    refresh_token: str = ""


class Authenticator:
    """Per-registry state: the challenge last seen, credentials, token cache."""

    def __init__(self, registry: str, creds: Credentials):
        self.registry = registry
        self.creds = creds
        self.challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}
        self._locks: dict[frozenset[str], asyncio.Lock] = {}
        self.refresh_token: str = ""  # an identity token handed out at login
        self.token_requests = 0       # for tests: how often the realm was asked

    def on_challenge(self, header: str | None) -> Challenge | None:
        """Remember a 401's challenge; returns it (None if unusable)."""
        if not header:
            return None
        c = pick_challenge(header)
        if c is not None:
            self.challenge = c
        return c

    def forget(self, scopes: Iterable[str]) -> None:
        self._tokens.pop(frozenset(scopes), None)

    async def header(self, transport: wire.Transport, scopes: Iterable[str], ssl,
                     extra_scope: str | None = None) -> str | None:
        """The Authorization value for a request needing `scopes`, or None (anonymous)."""
        c = self.challenge
        if c is None:
            return None
        if c.scheme == "basic":
            return basic_header(self.creds) if not self.creds.empty else None
        key = frozenset(s for s in [*scopes, extra_scope] if s)
        tok = self._tokens.get(key)
        if tok is not None and tok.expires_at > time.monotonic():
            return f"Bearer {tok.value}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent layer tasks share one token request
            tok = self._tokens.get(key)
            if tok is None or tok.expires_at <= time.monotonic():
                tok = await self.fetch_token(transport, sorted(key), ssl)
                self._tokens[key] = tok
        return f"Bearer {tok.value}"

    async def fetch_token(self, transport: wire.Transport, scopes: list[str], ssl,
                          offline: bool = False) -> _Token:
        c = self.challenge
        assert c is not None and c.scheme == "bearer"
        realm = c.realm
        if not realm.startswith(("http://", "https://")):
            raise ProtocolError(f"{self.registry}: token realm {realm!r} is not an http(s) URL")
        service = c.params.get("service")
        self.token_requests += 1
        try:
            if self.creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": self.creds.identity_token,
                        "client_id": CLIENT_ID}
                if service:
                    form["service"] = service
                if scopes:
                    form["scope"] = " ".join(scopes)
                resp = await transport.request("POST", realm, {"Content-Type": FORM}, urlencode(form).encode(),
                                               ssl)
            else:
                params: list[tuple[str, str]] = []
                if service:
                    params.append(("service", service))
                params += [("scope", s) for s in scopes]
                headers = {}
                if not self.creds.empty:
                    headers["Authorization"] = basic_header(self.creds)
                    params.append(("account", self.creds.username))
                if offline:
                    params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
                sep = "&" if "?" in realm else "?"
                resp = await transport.request("GET", realm + (sep + urlencode(params) if params else ""),
                                               headers, None, ssl)
            async with resp:
                if resp.status in (401, 403):
                    who = "no credentials" if self.creds.empty else "the credentials were refused"
                    raise AuthenticationRequired(
                        f"{self.registry}: token service {realm} denied access ({resp.status}, {who})"
                        + ("; run soko login " + self.registry if self.creds.empty else ""))
                if resp.status != 200:
                    raise ProtocolError(f"{self.registry}: token service {realm} answered {resp.status}")
                try:
                    body = json.loads(await resp.read(MAX_ANSWER))
                except ValueError:
                    raise ProtocolError(f"{self.registry}: token service returned invalid JSON") from None
        except wire.TransportError as e:
            raise ClientError(f"{self.registry}: cannot reach token service {realm}: {e}") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{self.registry}: token service returned invalid JSON")
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"{self.registry}: token service returned no token")
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRY
        margin = min(10.0, expires_in / 5)
        refresh = body.get("refresh_token") or ""
        if refresh:
            self.refresh_token = refresh
        return _Token(value, time.monotonic() + expires_in - margin, refresh)
