"""Docker's bearer tokens (distribution's token spec): scopes, the access a
token grants, issuing (soko's own /token endpoint) and verifying (soko's own
tokens or an external issuer's).

A token is a JWT: `iss` (the issuer), `sub` (the account), `aud` (the
registry's service name), `exp`/`nbf`/`iat`, `jti`, and `access`, the list of
`{type, name, actions}` granted. The registry checks the signature, issuer,
audience and times (with distribution's 60 s of leeway) and that the access
list covers the request. Refresh tokens (what `docker login` stores as its
identity token) are JWTs too, for another audience, carrying a fingerprint of
the account's password hash: a changed password or a removed account ends them.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .jws import JWSError, PrivateKey, Trust, sign, verify

LEEWAY = 60.0  # seconds, as distribution allows around exp and nbf
REFRESH_CLAIM = "soko_refresh"
_CACHE_MAX = 4096
_SCOPE_RE = re.compile(r"^([a-z0-9]+)(?:\(([a-z0-9]+)\))?:(.+):([a-z*,]*)$")


@dataclass(frozen=True)
class Scope:
    """`repository:team/app:pull,push`, `registry:catalog:*`."""
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Scope | None":
        m = _SCOPE_RE.match(text.strip())
        if not m:
            return None
        return cls(m.group(1), m.group(3), tuple(a for a in m.group(4).split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Scopes of query values (each may hold several, space-separated); unparsable ones are dropped."""
    out = []
    for value in values:
        for part in value.split():
            s = Scope.parse(part)
            if s is not None:
                out.append(s)
    return out


def challenge_scope(scopes: Iterable[Scope]) -> str:
    """The scope parameter of a challenge: one entry per resource, actions sorted,
    space-separated (as distribution writes it)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for s in scopes:
        merged.setdefault((s.type, s.name), set()).update(s.actions)
    return " ".join(f"{t}:{n}:{','.join(sorted(a))}" for (t, n), a in merged.items())


class Grants:
    """The `access` claim of a token: (type, name) -> actions ("*" is every action)."""

    def __init__(self, access: Any):
        self._by: dict[tuple[str, str], frozenset[str]] = {}
        for entry in access if isinstance(access, list) else []:
            if not isinstance(entry, dict):
                continue
            t, n, acts = entry.get("type"), entry.get("name"), entry.get("actions")
            if isinstance(t, str) and isinstance(n, str) and isinstance(acts, list):
                self._by[(t, n)] = self._by.get((t, n), frozenset()) | {a for a in acts if isinstance(a, str)}

    def allows(self, type_: str, name: str, action: str) -> bool:
        acts = self._by.get((type_, name), frozenset())
        return action in acts or "*" in acts


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    issuer: str
    grants: Grants
    expires: float
    own: bool  # signed by this registry's own key: the subject is one of its accounts


class TokenVerifier:
    """Checks bearer tokens: signature by a trusted key, issuer, audience, times."""

    def __init__(self, trust: Trust, issuer: str, service: str, own: bool):
        self.trust, self.issuer, self.service, self.own = trust, issuer, service, own
        self._cache: OrderedDict[bytes, TokenClaims] = OrderedDict()  # sha256(token) -> claims

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The token's claims, or JWSError saying why it is refused."""
        now = time.time() if now is None else now
        key = hashlib.sha256(token.encode(errors="surrogateescape")).digest()
        claims = self._cache.get(key)
        if claims is None:
            claims = self._check(token, now)
            self._cache[key] = claims
            if len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)
        if now > claims.expires + LEEWAY:
            raise JWSError("token expired")
        return claims

    def _check(self, token: str, now: float) -> TokenClaims:
        _, c = verify(token, self.trust)
        if c.get("iss") != self.issuer:
            raise JWSError(f"token from an untrusted issuer {c.get('iss')!r}")
        aud = c.get("aud")
        if not (aud == self.service or (isinstance(aud, list) and self.service in aud)):
            raise JWSError(f"token is for another audience {aud!r}")
        if REFRESH_CLAIM in c:
            raise JWSError("a refresh token is not an access token")
        exp, nbf = c.get("exp"), c.get("nbf", 0)
        if not _number(exp) or not _number(nbf):
            raise JWSError("token without a valid exp/nbf")
        if now > exp + LEEWAY:
            raise JWSError("token expired")
        if now < nbf - LEEWAY:
            raise JWSError("token not valid yet")
        sub = c.get("sub")
        return TokenClaims(sub if isinstance(sub, str) else "", self.issuer, Grants(c.get("access")), float(exp),
                           self.own)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class TokenIssuer:
    """Signs access and refresh tokens with the registry's key."""

    def __init__(self, key: PrivateKey, issuer: str, service: str, expiration: float, refresh_expiration: float):
        self.key, self.issuer, self.service = key, issuer, service
        self.expiration, self.refresh_expiration = expiration, refresh_expiration

    @property
    def refresh_audience(self) -> str:
        return f"{self.service}#refresh"

    def access_token(self, subject: str, access: list[dict[str, Any]], now: float | None = None) -> str:
        now = int(time.time() if now is None else now)
        return sign({"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + int(self.expiration),
                     "nbf": now, "iat": now, "jti": secrets.token_hex(12), "access": access}, self.key)

    def refresh_token(self, subject: str, fingerprint: str) -> str:
        now = int(time.time())
        return sign({"iss": self.issuer, "sub": subject, "aud": self.refresh_audience,
                     "exp": now + int(self.refresh_expiration), "nbf": now, "iat": now, "jti": secrets.token_hex(12),
                     REFRESH_CLAIM: fingerprint}, self.key)

    def check_refresh(self, token: str, fingerprint_of: Callable[[str], str | None]) -> str:
        """The account a refresh token was issued to (JWSError when it is not one of ours,
        expired, or the account's password changed since)."""
        _, c = verify(token, Trust.of([self.key.public_key()]))
        now = time.time()
        if c.get("iss") != self.issuer or c.get("aud") != self.refresh_audience or REFRESH_CLAIM not in c:
            raise JWSError("not a refresh token of this registry")
        if not _number(c.get("exp")) or now > c["exp"]:
            raise JWSError("refresh token expired")
        sub = c.get("sub")
        if not isinstance(sub, str) or fingerprint_of(sub) != c[REFRESH_CLAIM]:
            raise JWSError("refresh token no longer valid (the account changed)")
        return sub
