"""Small helpers shared by the handlers: responses, error bodies, headers."""
from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..errors import APIError
from storage import digests, references
from storage.errors import StorageError

API_VERSION = {"Docker-Distribution-Api-Version": "registry/2.0"}
JSON = "application/json"
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")
_NUMBER_RE = re.compile(r"[0-9]{1,9}")


def error_response(err: APIError, *more: APIError) -> web.Response:
    """The spec's error body; the first error decides status and headers."""
    body = json.dumps({"errors": [e.to_json() for e in (err, *more)]}).encode()
    headers = {**API_VERSION, **err.headers}
    return web.Response(status=err.status, body=body, content_type=JSON, headers=headers)


def json_response(obj: Any, status: int = 200, content_type: str = JSON,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode(), content_type=content_type,
                        headers={**API_VERSION, **(headers or {})})


def empty(status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers={**API_VERSION, "Content-Length": "0", **(headers or {})})


def check_name(name: str) -> str:
    try:
        return references.validate_repository(name)
    except StorageError as e:
        raise APIError("NAME_INVALID", str(e), {"name": name}) from None


def check_digest(digest: str, code: str = "DIGEST_INVALID") -> str:
    try:
        digests.parse(digest)
    except StorageError as e:
        raise APIError(code, str(e), {"digest": digest}) from None
    return digest


def check_tag(tag: str) -> str:
    try:
        return references.validate_tag(tag)
    except StorageError as e:
        raise APIError("TAG_INVALID", str(e), {"tag": tag}) from None


def is_digest_ref(reference: str) -> bool:
    return ":" in reference


def content_range(value: str) -> tuple[int, int] | None:
    """`start-end` (inclusive; `bytes=`/`bytes ` prefix tolerated) or None if malformed."""
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    return (start, end) if end >= start else None


def upload_range(offset: int) -> str:
    """The `Range` header of an upload holding `offset` bytes (as distribution writes it)."""
    return f"0-{max(offset - 1, 0)}"


def accepted_types(request: web.Request) -> set[str] | None:
    """Media types in the Accept header(s); None when anything goes."""
    values = request.headers.getall("Accept", [])
    if not values:
        return None
    out: set[str] = set()
    for value in values:
        for part in value.split(","):
            mtype = part.split(";", 1)[0].strip().lower()
            if mtype in ("*/*", "application/*"):
                return None
            if mtype:
                out.add(mtype)
    return out or None


def page_size(request: web.Request, maximum: int) -> int | None:
    """The `n` of a paginated listing: ASCII digits, 0..maximum."""
    raw = request.query.get("n")
    if raw is None:
        return None
    if not _NUMBER_RE.fullmatch(raw) or int(raw) > maximum:
        raise APIError("PAGINATION_NUMBER_INVALID", f"invalid n={raw[:40]!r} (want 0..{maximum})",
                       {"n": raw[:40]})
    return int(raw)
