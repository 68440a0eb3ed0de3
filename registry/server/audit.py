"""The audit log: one JSON object per line (time, actor, address, action,
repository, tag, digest, outcome, ...) for manifest pushes, pulls and
deletes, blob deletes, logins and refusals. The event loop only queues a
line; a thread of its own appends and flushes, so a slow disk never delays a
request. Layer pushes and pulls are left out: the manifest event names the image."""
from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import threading
from pathlib import Path

from .events import BLOB, DELETE, Event

log = logging.getLogger("soko.registry")
_STOP = object()


def wanted(event: Event) -> bool:
    return event.target != BLOB or event.action == DELETE


def line(event: Event) -> str:
    obj = event.to_json()
    obj["time"] = datetime.datetime.fromtimestamp(event.time, datetime.timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    order = ["time", "actor", "address", "action", "repository", "tag", "digest", "outcome"]
    ordered = {k: obj[k] for k in order if k in obj}
    ordered.update((k, v) for k, v in obj.items() if k not in ordered)
    return json.dumps(ordered, separators=(",", ":"))


class AuditLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # it names who did what
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="soko-audit", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        if wanted(event):
            self._queue.put(event)

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while True:  # write what has queued up meanwhile, then flush once
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for ev in batch:
                    if ev is not _STOP:
                        self._file.write(line(ev) + "\n")
                self._file.flush()
            except OSError as e:
                log.error("audit log %s: %s", self.path, e)
            if any(ev is _STOP for ev in batch):
                return

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._file.close()
