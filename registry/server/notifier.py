"""Webhook notifications: each push, pull, delete and mount goes, in
distribution's envelope format, to every `[[notifications.endpoints]]` that
does not ignore it.

Events are queued on disk first (notifyqueue.py) and delivered by one task
per endpoint, in order, a batch of what has queued up at a time, off the
request path: a dead or hanging endpoint only makes its own queue longer.
A failed delivery (no connection, a timeout, a status of 400 or more) is
tried again with the same events: at once until `threshold` failures in a
row, then every `backoff`, as distribution's endpoints do, until the
endpoint takes them; only then come the next ones.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from pathlib import Path

import aiohttp

from .envelope import EVENTS_MEDIA_TYPE, dumps, envelope, record, target_media_type
from .events import Event
from .metrics import Metrics
from .notifyqueue import NotificationQueue
from .sections import Endpoint

log = logging.getLogger("soko.registry")
BATCH = 32  # events per envelope at most
USER_AGENT = "soko-registry"


class Notifier:
    def __init__(self, endpoints: list[Endpoint], root: Path, metrics: Metrics):
        self.endpoints = endpoints
        self.all_names = {e.name for e in endpoints}
        self.queue = NotificationQueue(root / "notifications.db")
        self.instance_id = str(uuid.uuid4())
        self.source_addr = socket.gethostname()
        self._wake = {e.name: asyncio.Event() for e in endpoints}
        self._tasks: list[asyncio.Task] = []
        self._http: aiohttp.ClientSession | None = None
        self.queued = metrics.counter("notifications_queued_events", "Events queued for an endpoint", ["endpoint"])
        self.sent = metrics.counter("notifications_sent_events", "Events an endpoint accepted", ["endpoint"])
        self.failures = metrics.counter("notifications_failures", "Failed deliveries (retried)", ["endpoint"])

    def bound(self, port: int) -> None:
        self.source_addr = f"{socket.gethostname()}:{port}"

    def __call__(self, event: Event) -> None:
        """(event loop) An event subscriber: queue it for each endpoint that wants it."""
        rec = record(event, self.source_addr, self.instance_id)
        if rec is None:
            return
        media_type = target_media_type(event)
        wanted = [e.name for e in self.endpoints if not e.ignores(event.action, media_type)]
        if not wanted:
            return
        body = dumps(rec)
        self.queue.put((name, body) for name in wanted)
        for name in wanted:
            self.queued.labels(name).inc()
            self._wake[name].set()

    async def start(self, keep: set[str]) -> None:
        dropped = await self.queue.keep_only(keep)
        if dropped:
            log.warning("notifications: dropped %d queued event(s) of endpoints no longer configured", dropped)
        self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        self._tasks = [asyncio.create_task(self._deliver(e), name=f"notify-{e.name}") for e in self.endpoints]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        self.queue.close()

    # -- one endpoint ---------------------------------------------------------------------------------
    async def _deliver(self, ep: Endpoint) -> None:
        wake = self._wake[ep.name]
        failures = 0
        while True:
            wake.clear()  # before reading: an event put after this wakes the wait below
            batch = await self.queue.head(ep.name, BATCH)
            if not batch:
                await wake.wait()
                continue
            error = await self._post(ep, envelope([body for _, body in batch]))
            if error is None:
                await self.queue.ack(ep.name, batch[-1][0])
                self.sent.labels(ep.name).inc(len(batch))
                if failures:
                    log.info("notifications: endpoint %s takes events again", ep.name)
                failures = 0
                continue
            failures += 1
            self.failures.labels(ep.name).inc()
            if failures == 1 or failures == ep.threshold:
                log.warning("notifications: endpoint %s (%s): %s; %d event(s) waiting, retrying",
                            ep.name, ep.url, error, len(batch))
            if failures >= ep.threshold:
                await asyncio.sleep(ep.backoff)
            else:
                await asyncio.sleep(0)

    async def _post(self, ep: Endpoint, body: bytes) -> str | None:
        """Deliver once: None when the endpoint took it, else what went wrong."""
        assert self._http is not None
        headers = [("Content-Type", EVENTS_MEDIA_TYPE)]
        headers += [(k, v) for k, values in ep.headers.items() for v in values]
        try:
            async with self._http.post(ep.url, data=body, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=ep.timeout)) as resp:
                await resp.read()
                if 200 <= resp.status < 400:  # distribution takes 2xx and 3xx as accepted
                    return None
                return f"answered {resp.status}"
        except asyncio.TimeoutError:
            return f"no answer within {ep.timeout:g} s"
        except aiohttp.ClientError as e:
            return str(e) or type(e).__name__
