"""One registry host over HTTP: scheme and TLS, authentication, retries.

Scheme rules follow Docker: `localhost`, `127.0.0.0/8` and `::1` speak plain
HTTP (falling back to HTTPS without verification when the port turns out to
speak TLS); `--insecure` allows unverified HTTPS and then plain HTTP for any
host; everything else is verified HTTPS, trusting the system CAs plus
`options.ca_file` and `/etc/docker/certs.d/HOST/*.crt`.

Requests are retried with exponential backoff on 408, 429 (honouring
Retry-After), 5xx and dropped connections. Uploads, whose retries need the
server's offset first, ask for `retries=0` and resume on their own.

The bytes travel through a transport (wire.py): the standard library's
http.client in worker threads unless the options ask for aiohttp (the
registry server's proxy) or an aiohttp session is handed in.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import ssl
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlencode

from . import wire
from .auth import Authenticator
from .credentials import Credentials
from .errors import (AccessDenied, AuthenticationRequired, ClientError, ConnectionDropped, HTTPStatusError,
                     NotFound, ProtocolError, TLSFailure, Unreachable, UsageError)
from .options import ClientOptions

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
CERTS_D = Path("/etc/docker/certs.d")


def api_host(registry: str) -> str:
    return DOCKER_HUB_API if registry in (DOCKER_HUB, "index.docker.io") else registry


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") and host.count(":") == 1 else host
    if name.startswith("[") and "]" in name:
        name = name[1:name.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def retryable_status(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status not in (501, 505))


def retry_after(headers: Any) -> float | None:
    """Seconds a Retry-After header asks for (its name in any case: some callers keep headers in a plain dict)."""
    value = None
    if headers is not None:
        value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RegistrySession:
    """Everything needed to talk to one registry; use as `async with`."""

    def __init__(self, registry: str, options: ClientOptions, creds: Credentials | None = None,
                 http: Any = None, scheme: str | None = None):
        """`http`: an aiohttp ClientSession to send through (the caller closes it)."""
        self.registry = registry          # as written in references: docker.io, localhost:5000
        self.scheme = scheme              # "http" or "https" when the caller knows (a configured URL)
        self.host = api_host(registry)
        self.options = options
        self.auth = Authenticator(registry, creds or Credentials())
        self._http = http
        self._transport: wire.Transport | None = None
        self.base: str | None = None      # http://host or https://host once known
        self.ssl: ssl.SSLContext | bool = True
        self._ping_lock = asyncio.Lock()
        self._ping_failed: ClientError | None = None
        self.retries_done = 0             # for tests and progress

    # -- lifecycle ------------------------------------------------------------
    async def __aenter__(self) -> "RegistrySession":
        if self._transport is None:
            if self.options.transport not in ("stdlib", "aiohttp"):
                raise UsageError(f"unknown transport {self.options.transport!r} (stdlib or aiohttp)")
            if self._http is not None or self.options.transport == "aiohttp":
                from .wire_aio import AioTransport
                self._transport = AioTransport(self.options, self._http)
            else:
                from .wire_std import StdTransport
                self._transport = StdTransport(self.options)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    @property
    def transport(self) -> wire.Transport:
        assert self._transport is not None, "RegistrySession used outside `async with`"
        return self._transport

    # -- TLS and scheme ---------------------------------------------------------
    def _verified_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.options.ca_file:
            try:
                ctx.load_verify_locations(self.options.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise TLSFailure(f"cannot load CA file {self.options.ca_file}: {e}") from None
        certs = CERTS_D / self.host
        if certs.is_dir():
            for crt in sorted(certs.glob("*.crt")):
                ctx.load_verify_locations(str(crt))
        return ctx

    def _candidates(self) -> list[tuple[str, ssl.SSLContext | bool]]:
        if self.scheme == "http":
            return [("http", False)]
        if self.scheme == "https":
            return [("https", False if self.options.insecure else self._verified_context())]
        if is_loopback(self.host):
            return [("http", False), ("https", False)]
        if self.options.insecure:
            return [("https", False), ("http", False)]
        return [("https", self._verified_context())]

    async def ping(self) -> None:
        """GET /v2/ once: settles the scheme and learns the auth challenge."""
        if self.base is not None:
            return
        seen = self._ping_failed
        async with self._ping_lock:
            if self._ping_failed is not seen:  # waited on a ping that failed: its failure, not another try
                raise self._ping_failed
            if self.base is None:
                try:
                    await self._ping()
                except ClientError as e:
                    self._ping_failed = e
                    raise

    async def _ping(self) -> None:
        last: BaseException | None = None
        candidates = self._candidates()
        hint: float | None = None
        for attempt in range(self.options.retries + 1):
            if attempt:
                await self.backoff(attempt, hint)
                hint = None
            for i, (scheme, ctx) in enumerate(candidates):
                more = i + 1 < len(candidates)
                url = f"{scheme}://{self.host}/v2/"
                try:
                    resp = await self.transport.request("GET", url, {}, None, ctx)
                except wire.TLSFailed as e:
                    if e.certificate or ctx is not False:
                        raise self._tls_error(e) from None
                    last = e
                    continue
                except wire.ConnectFailed as e:
                    if attempt >= min(self.options.retries, 2):
                        raise Unreachable(f"cannot connect to registry {self.registry}: {e.reason()}") from None
                    last = e
                    break
                except wire.TransportError as e:
                    last = e  # e.g. plain HTTP to a TLS port: the next candidate may work
                    continue
                async with resp:
                    status = resp.status
                    if status == 400 and scheme == "http" and more:
                        continue  # plain HTTP sent to a TLS port
                    if retryable_status(status) and attempt < self.options.retries:
                        last = HTTPStatusError(f"GET /v2/ gave {status}", status)
                        hint = retry_after(resp.headers)
                        break
                    if status == 401:
                        self.auth.on_challenge(resp.headers.get("WWW-Authenticate"))
                    elif status == 404:
                        raise ProtocolError(f"{self.registry} does not look like a registry (GET /v2/ gave 404)")
                    elif status >= 500:
                        raise HTTPStatusError(f"registry {self.registry} is unhealthy: GET /v2/ gave {status}",
                                              status)
                self.base = f"{scheme}://{self.host}"
                self.ssl = ctx
                return
        raise Unreachable(f"cannot talk to registry {self.registry}: {describe(last)}"
                          + ("" if self.options.insecure or is_loopback(self.host) else
                             " (if it speaks plain HTTP, use --insecure)"))

    def _tls_error(self, e: BaseException) -> TLSFailure:
        if "wrong version number" in describe(e).lower():
            return TLSFailure(f"{self.registry} does not speak TLS (plain HTTP?); use --insecure to allow "
                              f"plain HTTP")
        return TLSFailure(f"TLS failure talking to {self.registry}: {describe(e)}; put the registry's CA "
                          f"file in {CERTS_D}/{self.host}/ca.crt or use --insecure")

    def url(self, path: str) -> str:
        assert self.base is not None
        return path if path.startswith(("http://", "https://")) else self.base + path

    # -- requests ---------------------------------------------------------------
    async def request(self, method: str, path: str, *, scopes: Iterable[str] = (),
                      headers: dict[str, str] | None = None,
                      data: bytes | Callable[[], Any] | None = None,
                      params: dict[str, str] | None = None, allow_redirects: bool = True,
                      retries: int | None = None) -> wire.Response:
        """Send with auth; retry what may be retried. Returns the final response
        (any status): the caller checks it, e.g. with `raise_for_status`. A
        callable `data` is called per attempt (streams cannot be replayed)."""
        await self.ping()
        url = with_params(self.url(path), params)
        scopes = tuple(scopes)
        max_retries = self.options.retries if retries is None else retries
        attempt = 0
        auth_retried = False
        extra_scope: str | None = None
        while True:
            h = dict(headers or {})
            authz = await self.auth.header(self.transport, scopes, self.ssl, extra_scope)
            if authz:
                h["Authorization"] = authz
            body = data() if callable(data) else data
            try:
                resp = await self.transport.request(method, url, h, body, self.ssl, allow_redirects)
            except wire.TLSFailed as e:
                raise self._tls_error(e) from None
            except wire.ConnectFailed as e:
                if attempt >= min(max_retries, 2):
                    raise Unreachable(f"cannot connect to registry {self.registry}: {e.reason()}") from None
                attempt += 1
                await self.backoff(attempt, None)
                continue
            except wire.Dropped as e:
                if attempt >= max_retries:
                    raise ConnectionDropped(f"{self.registry}: {method} {path_of(path)} failed after "
                                            f"{attempt + 1} attempt{'s' if attempt else ''}: {describe(e)}") from e
                attempt += 1
                await self.backoff(attempt, None)
                continue
            except wire.TransportError as e:
                raise ProtocolError(f"{self.registry}: {method} {path_of(path)}: {describe(e)}") from None
            if resp.status == 401 and not auth_retried:
                c = self.auth.on_challenge(resp.headers.get("WWW-Authenticate"))
                if c is not None and (c.scheme == "bearer" or not self.auth.creds.empty):
                    auth_retried = True
                    self.auth.forget([*scopes, extra_scope] if extra_scope else scopes)
                    if c.scheme == "bearer" and c.params.get("scope") and c.params["scope"] not in scopes:
                        extra_scope = c.params["scope"]
                    resp.release()
                    continue
            if retryable_status(resp.status) and attempt < max_retries:
                wait = retry_after(resp.headers)
                resp.release()
                attempt += 1
                await self.backoff(attempt, wait)
                continue
            return resp

    async def backoff(self, attempt: int, suggested: float | None) -> None:
        self.retries_done += 1
        if suggested is None:
            suggested = self.options.backoff * (2 ** (attempt - 1)) * (0.8 + 0.4 * random.random())
        await asyncio.sleep(min(suggested, self.options.max_backoff))

    async def raise_for_status(self, resp: wire.Response, what: str, who: str | None = None) -> None:
        """Turn an error response into the matching one-line ClientError; `who`
        (the repository) replaces `what` in messages about access."""
        if resp.status < 400:
            return
        detail = await error_detail(resp)
        resp.release()
        raise self.status_error(resp.status, detail, what, who)

    def status_error(self, status: int, detail: str, what: str, who: str | None = None) -> ClientError:
        if status in (401, 403) and who:
            what = who
        if status == 401:
            if self.auth.creds.empty:
                return AuthenticationRequired(f"{what}: authentication required ({self.registry} gave 401"
                                              f"{': ' + detail if detail else ''}); run soko login {self.registry}")
            return AuthenticationRequired(f"{what}: unauthorized: {self.registry} refused the credentials"
                                          f"{' (' + detail + ')' if detail else ''}")
        if status == 403:
            return AccessDenied(f"{what}: access denied by {self.registry}{': ' + detail if detail else ''}")
        if status == 404:
            return NotFound(f"{what}: not found{': ' + detail if detail else ''}")
        return HTTPStatusError(f"{what}: {self.registry} answered {status}{': ' + detail if detail else ''}", status)


def with_params(url: str, params: dict[str, str] | None) -> str:
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(params)


async def error_detail(resp: wire.Response) -> str:
    """The first error of an OCI error body (`{"errors":[{code,message}]}`), if any."""
    try:
        raw = await resp.read(65536)
    except wire.TransportError:
        return ""
    return detail_of(raw)


def detail_of(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        errs = obj.get("errors") if isinstance(obj, dict) else None
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code = str(errs[0].get("code", "")).lower().replace("_", " ")
            msg = str(errs[0].get("message", ""))
            return f"{code}: {msg}" if code and msg and code not in msg.lower() else (msg or code)
    except (ValueError, AttributeError):
        pass
    text = raw.decode(errors="replace").strip().splitlines()
    return text[0][:200] if text else ""


def path_of(url: str) -> str:
    if url.startswith(("http://", "https://")):
        return "/" + url.split("/", 3)[-1]
    return url


def describe(e: BaseException | None) -> str:
    if e is None:
        return "no answer"
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300]
