"""One exception hierarchy for the registry package (server and client).

`APIError` carries an error code of the distribution spec; the server turns
it into `{"errors":[{"code","message","detail"}]}` with the code's HTTP status,
and the client can raise the same class from a registry's JSON error body.
"""
from __future__ import annotations

from typing import Any

# code -> (HTTP status the server answers with, the spec's default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
}


class RegistryError(Exception):
    """Base of everything the registry package raises on purpose."""


class ConfigError(RegistryError):
    """A server configuration (file or flags) is unusable."""


class APIError(RegistryError):
    """A distribution-spec error: `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str | None = None, detail: Any = None,
                 status: int | None = None, headers: dict[str, str] | None = None):
        default_status, default_message = ERROR_CODES.get(code, (400, code.lower()))
        self.code = code
        self.message = message or default_message
        self.detail = detail
        self.status = status or default_status
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return err
