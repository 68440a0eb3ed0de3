"""Prometheus metrics at `/metrics`: requests by route, method and status with
latency histograms, bytes in and out, what the registry stores, upload
sessions, garbage collections and authentication failures.

Requests are counted when their answer has been sent (aiohttp's access-log
hook, so a blob's latency includes sending it); stored content and gc runs
are read from the metadata database at scrape time, off the event loop, so
a collection run by `soko gc --registry` in another process counts too.
Each server has its own CollectorRegistry (tests run several in one process).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import APIError
from .events import DENIED, LOGIN, REASONS, Event
from .stats import RegistryStats, registry_stats

if TYPE_CHECKING:
    from .app import Server

PREFIX = "soko_registry"
ROUTE = web.RequestKey("soko_route", str)  # the route's label, set by the dispatcher
UNKNOWN_ROUTE = "unknown"
# Seconds; blob transfers can take minutes, so the buckets reach further than the defaults.
BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram(f"{PREFIX}_http_request_duration_seconds",
                                 "From the request's headers to the last byte of the answer", ["route", "method"],
                                 buckets=BUCKETS, registry=r)
        self.bytes_in = Counter(f"{PREFIX}_http_received_bytes", "Request body bytes received", ["route"],
                                registry=r)
        self.bytes_out = Counter(f"{PREFIX}_http_sent_bytes", "Response body bytes sent", ["route"], registry=r)
        self.auth_failures = Counter(f"{PREFIX}_auth_failures", "Failed logins and refused requests", ["reason"],
                                     registry=r)
        for reason in REASONS:
            self.auth_failures.labels(reason)
        self._stats: RegistryStats | None = None
        r.register(_Stored(self))

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        """A counter of another component (notifications, the proxy), on this registry."""
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

    # -- what happens ------------------------------------------------------------------------------
    def observe(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
        route = request.get(ROUTE, UNKNOWN_ROUTE)
        method = request.method if request.method in _METHODS else "other"
        self.requests.labels(route, method, str(response.status)).inc()
        self.latency.labels(route, method).observe(seconds)
        received = getattr(request.content, "total_bytes", 0)
        if received:
            self.bytes_in.labels(route).inc(received)
        sent = _body_bytes(request, response)
        if sent:
            self.bytes_out.labels(route).inc(sent)

    def on_event(self, event: Event) -> None:
        if event.action in (LOGIN, DENIED) and event.reason is not None:
            self.auth_failures.labels(event.reason).inc()

    # -- the endpoint ----------------------------------------------------------------------------------
    async def serve(self, srv: "Server", request: web.Request) -> web.StreamResponse:
        """GET /metrics, as `[metrics] access` allows."""
        opts = srv.config.metrics
        if not opts.enabled:
            raise APIError("UNSUPPORTED", f"no such endpoint: {request.path}", status=404)
        account = opts.account
        if account is not None:
            principal = await srv.auth.identify(request)
            if principal.account.anonymous:
                raise srv.auth.challenge(request, "authentication required for /metrics")
            if principal.name != account:
                raise APIError("DENIED", f"{principal.name} may not read /metrics",
                               {"account": principal.name, "resource": "metrics"})
        self._stats = await srv.reg.run(registry_stats, srv.reg.meta)
        body = await srv.reg.run(generate_latest, self.registry)
        # the text format every Prometheus reads (names here are plain ASCII)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def metrics_endpoint(srv: "Server", request: web.Request) -> web.StreamResponse:
    return await srv.metrics.serve(srv, request)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes of an answer that was sent (FileResponse goes by sendfile, which
    aiohttp's own byte count leaves out: its Content-Length says it)."""
    if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
        return 0
    if response.content_length is not None:
        return response.content_length
    return response.body_length


class _Stored:
    """What the last scrape read from the database, as Prometheus families."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        s = self.metrics._stats
        if s is None:
            return
        for name, doc, value in (
                ("repositories", "Repositories", s.repositories),
                ("tags", "Tags", s.tags),
                ("manifests", "Manifests (per repository)", s.manifests),
                ("blobs", "Unique blobs and manifests stored (linked into some repository)", s.blobs),
                ("blob_bytes", "Bytes of the unique blobs and manifests stored", s.bytes),
                ("uploads_in_progress", "Upload sessions open (until finished, cancelled or expired)",
                 s.uploads)):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        yield CounterMetricFamily(f"{PREFIX}_gc_runs", "Garbage collections run on this registry root",
                                  value=s.gc_runs)
        yield CounterMetricFamily(f"{PREFIX}_gc_freed_bytes", "Bytes of blobs garbage collection deleted",
                                  value=s.gc_bytes_freed)
        if s.last_gc is not None:
            yield GaugeMetricFamily(f"{PREFIX}_gc_last_run_timestamp_seconds", "When the last collection finished",
                                    value=s.last_gc.finished)


def access_logger_for(srv: "Server") -> type[AbstractAccessLogger]:
    """The access-log class of aiohttp's runner for `srv`: aiohttp calls it once an
    answer is sent (also for requests it refused itself), so the metrics see every
    request; the access log proper is written only when the config asks for it."""

    class ObservingAccessLogger(AbstractAccessLogger):
        def __init__(self, logger, log_format: str) -> None:
            super().__init__(logger, log_format)
            self._lines = AccessLogger(logger, log_format) if srv.config.access_log else None

        @property
        def enabled(self) -> bool:
            return True

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            srv.metrics.observe(request, response, time)
            if self._lines is not None:
                self._lines.log(request, response, time)

    return ObservingAccessLogger
