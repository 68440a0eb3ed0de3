"""Authentication: the one place that says who a request comes from
(`Authenticator.identify`) and turns a refusal into the right answer
(`Authenticator.authorize`): 401 with a challenge when credentials are
missing, wrong or a token does not cover the request; 403 DENIED when the
caller is known and the rules say no.

Modes: open (no accounts, no [token]: nothing is checked), Basic (accounts,
no [token]: `WWW-Authenticate: Basic`), token ([token]: `WWW-Authenticate:
Bearer realm=...,service=...,scope=...`, soko's own /token endpoint or an
external issuer). With tokens, Basic credentials sent straight to the
registry are still accepted unless `[token] basic = false`.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from aiohttp import web

from ..errors import APIError, ConfigError
from .access import AccessControl
from .accounts import ANONYMOUS_ACCOUNT, Account, Directory
from .config import ServerConfig
from .events import (BAD_CREDENTIALS, DENIED, INSUFFICIENT_SCOPE, INVALID_TOKEN, LOGIN, REFUSED, UNAUTHENTICATED,
                     Events)
from .jws import JWSError, Trust
from .passwords import PasswordChecker, basic_value
from .tokens import Scope, TokenClaims, TokenIssuer, TokenVerifier, challenge_scope


@dataclass(frozen=True)
class Principal:
    """Who is asking: an account, and the token it presented (whose grants then decide)."""
    account: Account
    token: TokenClaims | None = None
    via: str = "anonymous"  # anonymous | basic | token

    @property
    def name(self) -> str:
        return self.account.name


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS_ACCOUNT)
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
PRINCIPAL = web.RequestKey("soko_principal", Principal)


class Authenticator:
    def __init__(self, config: ServerConfig, directory: Directory, access: AccessControl, events: Events):
        self.config = config
        self.directory = directory
        self.access = access
        self.events = events
        self.token_opts = config.token
        has_accounts = not directory.empty
        self.mode = "token" if self.token_opts is not None else ("basic" if has_accounts else "open")
        basic_ok = has_accounts and (self.token_opts is None or self.token_opts.basic)
        self.passwords = PasswordChecker(directory, config.limits.max_auth_pending) if has_accounts else None
        self.accept_basic = basic_ok
        self.issuer: TokenIssuer | None = None
        self.verifier: TokenVerifier | None = None
        self._key = None
        self._trust: Trust | None = None
        if self.token_opts is not None:
            self._load_keys()
        self.bound(config.port)

    # -- setup -------------------------------------------------------------------------------------
    def _load_keys(self) -> None:
        from .keys import KeyFileError, load_certificates, load_private_key, make_signer

        opts = self.token_opts
        try:
            if opts.external:
                self._trust = Trust.of([], load_certificates(opts.rootcertbundle))
                return
            key_path = opts.key or make_signer(Path(self.config.root) / "token")[0]
            self._key = load_private_key(key_path)
            self._trust = Trust.of([self._key.public_key()])
        except KeyFileError as e:
            raise ConfigError(f"[token]: {e}") from None

    def bound(self, port: int) -> None:
        """The real port is known (port 0 in the config): the default service name follows it."""
        host = self.config.host
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.token_opts is None:
            return
        service = self.token_opts.service or self.address
        issuer = self.token_opts.issuer
        self.verifier = TokenVerifier(self._trust, issuer, service, own=not self.token_opts.external)
        if self._key is not None:
            self.issuer = TokenIssuer(self._key, issuer, service, self.token_opts.expiration,
                                      self.token_opts.refresh_expiration)

    @property
    def service(self) -> str:
        assert self.verifier is not None
        return self.verifier.service

    @property
    def required(self) -> bool:
        """Listings and /v2/ need credentials (an anonymous token counts)."""
        return self.mode != "open"

    def realm(self, request: web.Request) -> str:
        """The configured realm, else this server's /token under the name the client used for it."""
        if self.token_opts and self.token_opts.realm:
            return self.token_opts.realm
        host = request.host if _HOST_RE.fullmatch(request.host or "") else self.address
        return f"{request.scheme}://{host}/token"

    # -- answers -----------------------------------------------------------------------------------
    def challenge(self, request: web.Request, message: str = "authentication required",
                  scopes: Iterable[Scope] = (), error: str | None = None) -> APIError:
        """UNAUTHORIZED with the header that tells the client how to authenticate."""
        if self.mode == "token":
            value = f'Bearer realm="{self.realm(request)}",service="{self.service}"'
            scope = challenge_scope(scopes)
            if scope:
                value += f',scope="{scope}"'
            if error:
                value += f',error="{error}"'
        else:
            value = f'Basic realm="{self.config.realm}"'
        return APIError("UNAUTHORIZED", message, headers={"WWW-Authenticate": value})

    # -- who ---------------------------------------------------------------------------------------
    async def identify(self, request: web.Request) -> Principal:
        """The principal of a request (401 for credentials that do not hold)."""
        if self.mode == "open":
            return ANONYMOUS_PRINCIPAL
        header = request.headers.get("Authorization")
        if not header:
            return ANONYMOUS_PRINCIPAL
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.verifier is not None:
            try:
                claims = self.verifier.verify(value.strip())
            except JWSError as e:
                self.events.request_event(request, "?", LOGIN, outcome="failed", detail=f"invalid token: {e}",
                                          reason=INVALID_TOKEN)
                raise self.challenge(request, f"invalid token: {e}", error="invalid_token") from None
            account = self._token_account(claims)
            return Principal(account, claims, "token")
        if scheme == "basic" and self.accept_basic and self.passwords is not None:
            is_ping = request.method == "GET" and request.path in ("/v2/", "/v2")
            account = await self.basic(request, header, log_login=is_ping)
            return Principal(account, None, "basic")
        raise self.challenge(request, "unsupported credentials" if header else "authentication required")

    def _token_account(self, claims: TokenClaims) -> Account:
        if not claims.subject or claims.subject == ANONYMOUS_ACCOUNT.name:
            return ANONYMOUS_ACCOUNT
        if claims.own:
            found = self.directory.account(claims.subject)
            if found is not None:
                return found
        return Account(claims.subject, "external" if not claims.own else "unknown")

    async def basic(self, request: web.Request, header: str, log_login: bool = True) -> Account:
        """The account of a Basic Authorization value (401 with a challenge when refused).
        A login event is left when asked (the token endpoint, the /v2/ check `docker login`
        makes) and whenever bcrypt had to run; every refusal leaves a failed one."""
        if self.passwords is None:
            raise self.challenge(request, "this registry has no accounts")
        try:
            account, fresh = await self.passwords.check(header, f"addr:{request.remote or '?'}")
        except APIError as e:
            if e.code != "UNAUTHORIZED":
                raise
            self.events.request_event(request, _user_of(header), LOGIN, outcome="failed", detail=e.message,
                                      reason=BAD_CREDENTIALS)
            raise self.challenge(request, e.message) from None
        if fresh or log_login:
            self.events.request_event(request, account.name, LOGIN)
        return account

    async def login(self, request: web.Request, username: str, password: str) -> Account:
        """Check a user name and password (the token endpoint's password grant; a web
        UI's sign-in form): the account, or UNAUTHORIZED. Always leaves a login event."""
        return await self.basic(request, basic_value(username, password))

    # -- may it --------------------------------------------------------------------------------------
    def allows(self, principal: Principal, scope_type: str, name: str, action: str) -> bool:
        if principal.token is not None:
            return principal.token.grants.allows(scope_type, name, action)
        if scope_type == "repository":
            return self.access.may(principal.account, action, name)
        return True  # registry:catalog: listings are filtered per account

    def authorize(self, request: web.Request, principal: Principal, needs: list[Scope]) -> None:
        """Raise 401/403 unless `principal` may do everything `needs` asks."""
        missing = [(s, a) for s in needs for a in s.actions if not self.allows(principal, s.type, s.name, a)]
        if not missing:
            return
        scope, action = missing[0]
        what = f"{action} {scope.name}" if scope.type == "repository" else f"{scope.type}:{scope.name}:{action}"
        repo = scope.name if scope.type == "repository" else None
        if principal.account.anonymous:
            reason, err = UNAUTHENTICATED, self.challenge(request, f"authentication required to {what}", needs)
        elif principal.token is not None and (not principal.token.own or scope.type != "repository"
                                              or self.access.may(principal.account, action, scope.name)):
            # the account may, the token does not say so: the client should fetch a fitting one
            reason, err = INSUFFICIENT_SCOPE, self.challenge(request, f"the token does not allow {what}", needs,
                                                             error="insufficient_scope")
        else:
            reason, err = REFUSED, APIError("DENIED", f"{principal.name} may not {what}",
                                            {"account": principal.name, "action": action,
                                             "resource": f"{scope.type}:{scope.name}"})
        self.events.request_event(request, principal.name, DENIED, repository=repo, outcome="denied", detail=action,
                                  reason=reason)
        raise err

    def close(self) -> None:
        if self.passwords is not None:
            self.passwords.close()


def _user_of(header: str) -> str:
    """The user name a Basic value claims (for the audit log of a failed login)."""
    try:
        return base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode().partition(":")[0][:128]
    except (IndexError, binascii.Error, UnicodeDecodeError, ValueError):
        return "?"
