"""login/logout: check credentials against the registry, then file them as Docker does."""
from __future__ import annotations

from storage import references

from .credentials import Credentials, CredentialStore, normalize_host
from .errors import AuthenticationRequired, UsageError
from .options import ClientOptions
from .session import RegistrySession


def registry_host(text: str) -> str:
    """`https://Host:5000/v1/`, `index.docker.io`, `docker.io` -> the reference domain."""
    host = normalize_host(text)
    if not host:
        raise UsageError(f"invalid registry {text!r}")
    if host in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return references.DEFAULT_DOMAIN
    return host


async def check_credentials(registry: str, creds: Credentials, options: ClientOptions) -> Credentials:
    """GET /v2/ with the credentials (through the token service when the registry
    uses Bearer). Returns what to store: an identity token replaces the password
    when the token service hands one out."""
    async with RegistrySession(registry, options, creds) as sess:
        await sess.ping()
        challenge = sess.auth.challenge
        if challenge is None:
            return creds  # the registry asks for nothing; Docker stores the login anyway
        if challenge.scheme == "bearer":
            await sess.auth.fetch_token(sess.transport, [], sess.ssl, offline=True)
            if sess.auth.refresh_token:
                return Credentials(creds.username, "", sess.auth.refresh_token)
        resp = await sess.request("GET", "/v2/")
        async with resp:
            if resp.status == 401:
                raise AuthenticationRequired(f"login to {registry} failed: unauthorized: incorrect username "
                                             f"or password")
            await sess.raise_for_status(resp, f"login to {registry}")
    return creds


async def login_async(registry: str, user: str, password: str, options: ClientOptions | None = None) -> str:
    options = options or ClientOptions()
    host = registry_host(registry)
    if not user:
        raise UsageError("login needs a username")
    if not password:
        raise UsageError("login needs a password")
    stored = await check_credentials(host, Credentials(user, password), options)
    return CredentialStore(options.docker_config).store(host, stored)


def logout_sync(registry: str, options: ClientOptions | None = None) -> bool:
    options = options or ClientOptions()
    return CredentialStore(options.docker_config).erase(registry_host(registry))
