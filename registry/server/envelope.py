"""Registry events in CNCF distribution's notification format: what webhook
receivers written for distribution (and Harbor, GitLab) already read.

An envelope is `{"events": [EVENT, ...]}` sent as
`application/vnd.docker.distribution.events.v1+json`; each EVENT has `id`,
`timestamp`, `action` (push, pull, delete, mount), `target` (mediaType, size,
digest, length, repository, url, tag, fromRepository), `request` (id, addr,
host, method, useragent), `actor` (name) and `source` (addr, instanceID).
"""
from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from .events import DELETE, MANIFEST, MOUNT, PULL, PUSH, Event

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what distribution names a blob's type in events
ACTIONS = (PUSH, PULL, DELETE, MOUNT)


def timestamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def target_media_type(event: Event) -> str | None:
    """The target's media type as the ignore lists see it (None: a delete names none)."""
    if event.media_type:
        return event.media_type
    if event.action == DELETE:
        return None
    return BLOB_MEDIA_TYPE if event.target != MANIFEST else None


def record(event: Event, source_addr: str, instance_id: str) -> dict[str, Any] | None:
    """One event of the envelope; None for events that are not notified (logins, refusals)."""
    if event.action not in ACTIONS or event.repository is None:
        return None
    target: dict[str, Any] = {}
    media_type = target_media_type(event)
    if media_type:
        target["mediaType"] = media_type
    if event.size is not None:
        target["size"] = event.size
    if event.digest:
        target["digest"] = event.digest
    if event.size is not None:
        target["length"] = event.size  # distribution's older name for size
    target["repository"] = event.repository
    if event.source and event.action == MOUNT:
        target["fromRepository"] = event.source
    if event.digest and event.host:
        kind = "manifests" if event.target == MANIFEST else "blobs"
        target["url"] = f"{event.scheme or 'http'}://{event.host}/v2/{event.repository}/{kind}/{event.digest}"
    if event.tag:
        target["tag"] = event.tag
    return {
        "id": str(uuid.uuid4()),
        "timestamp": timestamp(event.time),
        "action": event.action,
        "target": target,
        "request": {"id": event.request_id or "", "addr": event.address, "host": event.host or "",
                    "method": event.method or "", "useragent": event.user_agent or ""},
        "actor": {"name": event.actor} if event.actor and event.actor != "anonymous" else {},
        "source": {"addr": source_addr, "instanceID": instance_id},
    }


def envelope(records: list[str]) -> bytes:
    """The body of one delivery: records as queued (JSON text), in order."""
    return ('{"events":[' + ",".join(records) + "]}").encode()


def dumps(rec: dict[str, Any]) -> str:
    return json.dumps(rec, separators=(",", ":"))
