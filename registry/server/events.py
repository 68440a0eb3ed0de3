"""What happened in the registry, as events: pushes, pulls, deletes, mounts,
logins and refusals. Handlers emit; subscribers (the audit log; notifications
and metrics plug in the same way) receive each event on the event loop and
must not block it: queue, and do the slow part elsewhere."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger("soko.registry")

PUSH, PULL, DELETE, MOUNT, LOGIN, DENIED = "push", "pull", "delete", "mount", "login", "denied"
MANIFEST, BLOB = "manifest", "blob"
# Why authentication or authorization failed (Event.reason; /metrics counts them):
# wrong password or secret; a token that does not verify; anonymous asking for more
# than anonymous may; a valid token not covering the request; a known account the rules refuse.
BAD_CREDENTIALS, INVALID_TOKEN, UNAUTHENTICATED, INSUFFICIENT_SCOPE, REFUSED = \
    "bad_credentials", "invalid_token", "unauthenticated", "insufficient_scope", "denied"
REASONS = (BAD_CREDENTIALS, INVALID_TOKEN, UNAUTHENTICATED, INSUFFICIENT_SCOPE, REFUSED)
_REQUEST_ID = web.RequestKey("soko_request_id", str)


@dataclass(frozen=True)
class Event:
    action: str  # push | pull | delete | mount | login | denied
    actor: str  # account name, "anonymous" when none
    address: str  # the client's address
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    target: str | None = None  # manifest | blob
    media_type: str | None = None
    size: int | None = None
    outcome: str = "ok"  # ok | failed (a login) | denied
    detail: str | None = None  # denied: what was asked (e.g. "push"); failed: why
    method: str | None = None
    user_agent: str | None = None
    source: str | None = None  # mount: the repository the blob came from
    reason: str | None = None  # a failed login or a refusal: one of REASONS
    request_id: str | None = None  # one per request (its events share it)
    host: str | None = None  # the Host the client used (notification URLs are built on it)
    scheme: str | None = None  # http | https
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


Subscriber = Callable[[Event], None]


class Events:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:  # a broken subscriber never fails a request
                log.exception("event subscriber failed")

    def request_event(self, request: web.Request, actor: str, action: str, **kw: Any) -> None:
        """Emit an event about `request` (address, method, user agent filled in)."""
        if not self._subscribers:
            return
        self.emit(Event(action, actor, request.remote or "?", method=request.method,
                        user_agent=request.headers.get("User-Agent"), request_id=request_id(request),
                        host=request.host, scheme=request.scheme, **kw))


def request_id(request: web.Request) -> str:
    """The request's id (made on first use)."""
    rid = request.get(_REQUEST_ID)
    if rid is None:
        rid = request[_REQUEST_ID] = str(uuid.uuid4())
    return rid
