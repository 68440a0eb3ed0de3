"""Sign-in sessions and CSRF tokens of the web UI.

A session lives on the server (this process's memory): the cookie carries a
random token, the server keeps only its SHA-256, so signing out ends it for
good and a restart signs everyone out. A session ends after `ttl`, after
`idle` without a page, when its account's password (secret) changes or the
account goes, and when the cap on sessions pushes the oldest out.

CSRF tokens are an HMAC of whatever cookie binds the visitor: the session
token once signed in, else a random anonymous cookie (so the sign-in form is
protected too). A form from another site has neither the token nor, with
SameSite=Strict, the cookie.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

SESSION_COOKIE = "soko_session"
ANON_COOKIE = "soko_csrf"
CSRF_FIELD = "csrf_token"
MAX_SESSIONS = 10000


@dataclass
class Session:
    account: str
    fingerprint: str | None  # of the account's hash when it signed in (accounts.Directory.fingerprint)
    created: float
    seen: float


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, ttl: float, idle: float, max_sessions: int = MAX_SESSIONS):
        self.ttl, self.idle, self.max_sessions = ttl, idle, max_sessions
        self._secret = secrets.token_bytes(32)
        self._items: OrderedDict[str, Session] = OrderedDict()  # oldest use first

    def create(self, account: str, fingerprint: str | None) -> str:
        """A new session for `account`; its token (for the cookie)."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._items[_key(token)] = Session(account, fingerprint, now, now)
        while len(self._items) > self.max_sessions:
            self._items.popitem(last=False)
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session of `token` (and it counts as used now)."""
        if not token:
            return None
        key = _key(token)
        s = self._items.get(key)
        if s is None:
            return None
        now = time.monotonic()
        if now - s.created >= self.ttl or now - s.seen >= self.idle:
            del self._items[key]
            return None
        s.seen = now
        self._items.move_to_end(key)
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._items.pop(_key(token), None)

    def __len__(self) -> int:
        return len(self._items)

    # -- CSRF ----------------------------------------------------------------------------------------
    def csrf(self, binding: str) -> str:
        """The form token for a visitor bound by `binding` (a cookie value)."""
        return hmac.new(self._secret, binding.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, binding: str | None, given: str | None) -> bool:
        if not binding or not given:
            return False
        return hmac.compare_digest(self.csrf(binding), given)


def new_anonymous_binding() -> str:
    return secrets.token_urlsafe(24)
