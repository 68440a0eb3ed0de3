"""The client's exceptions: each carries a one-line message fit for a terminal.

`soko/` prints `str(error)` and exits 1, so messages name the registry, the
repository or the digest concerned and, where there is one, the way out
(`soko login`, `--insecure`, a CA file).
"""
from __future__ import annotations

from registry.errors import RegistryError


class ClientError(RegistryError):
    """Base of everything the registry client raises on purpose."""


class UsageError(ClientError):
    """A bad argument: an unknown transport, an unusable reference."""


class CredentialsError(ClientError):
    """~/.docker/config.json is unreadable or a credential helper failed."""


class AuthenticationRequired(ClientError):
    """401: no credentials, wrong credentials, or the token service refused them."""


class AccessDenied(ClientError):
    """403 (or DENIED): the credentials are valid but not allowed this."""


class NotFound(ClientError):
    """404: repository, manifest or blob unknown to the registry."""


class TLSFailure(ClientError):
    """The TLS handshake or certificate verification failed."""


class Unreachable(ClientError):
    """No connection could be made to the registry."""


class ConnectionDropped(ClientError):
    """The connection broke mid-exchange, after every retry allowed."""


class ProtocolError(ClientError):
    """The registry answered something the distribution spec does not allow."""


class HTTPStatusError(ClientError):
    """Any other unexpected status, after retries where they apply."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class VerificationError(ClientError):
    """Content did not match the digest or size it was announced with."""

    def __init__(self, message: str, digest: str):
        super().__init__(message)
        self.digest = digest


class UploadError(ClientError):
    """A blob or manifest upload was refused or could not be completed."""
