"""Run the registry until SIGINT/SIGTERM: listen (TLS if asked), report the
actual address through `on_ready`, then serve."""
from __future__ import annotations

import asyncio
import logging
import resource
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aiohttp import http_exceptions, web

from .admission import EXHAUSTED
from .app import SERVER, log, make_app
from .config import ServerConfig, split_addr
from .metrics import access_logger_for
from .tls import self_signed, server_context


@dataclass(frozen=True)
class ServerInfo:
    url: str  # e.g. http://127.0.0.1:5000
    host: str
    port: int  # the real port, also when the config asked for port 0
    tls_cert: str | None  # the certificate served (the generated one for self-signed)


class _ClientFaults(logging.Filter):
    """aiohttp logs a malformed request or a vanished client with a traceback;
    neither is a bug of ours: one line, at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (http_exceptions.HttpProcessingError, ConnectionError, asyncio.TimeoutError)):
            return True
        record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}: {exc}", ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return log.isEnabledFor(logging.INFO)


HTTP_LOG = logging.getLogger("soko.registry.http")
HTTP_LOG.addFilter(_ClientFaults())


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """accept() out of descriptors: asyncio retries by itself; say so in one line."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in EXHAUSTED:
        log.warning("%s: %s", context.get("message", "out of resources"), exc)
        return
    loop.default_exception_handler(context)


def _tls(config: ServerConfig):
    tls = config.tls
    if tls.self_signed:
        cert, key = self_signed(Path(config.root), config.host)
        return server_context(cert, key), str(cert)
    if tls.cert and tls.key:
        return server_context(tls.cert, tls.key), tls.cert
    return None, None


async def serve(config: ServerConfig, on_ready: Callable[[ServerInfo], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or, when it is None, until SIGINT/SIGTERM)."""
    ssl_ctx, cert = _tls(config)
    app = make_app(config)
    asyncio.get_running_loop().set_exception_handler(_on_loop_error)
    # keepalive_timeout is also how long aiohttp waits for a request's headers
    # (counted from the connection or the last answer): the header timeout.
    # The access-log hook feeds /metrics; it writes lines only when access_log is set.
    runner = web.AppRunner(app, handle_signals=False, keepalive_timeout=config.limits.header_timeout,
                           logger=HTTP_LOG, access_log_class=access_logger_for(app[SERVER]))
    await runner.setup()
    try:
        host, port = split_addr(config.addr)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True)
        await site.start()
        server = site._server  # the asyncio server: its socket knows the real port
        real_port = server.sockets[0].getsockname()[1] if server and server.sockets else port
        app[SERVER].bound(real_port)
        scheme = "https" if ssl_ctx else "http"
        shown = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(ServerInfo(f"{scheme}://{shown}:{real_port}", host, real_port, cert))
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: ServerConfig, on_ready: Callable[[ServerInfo], None] | None = None) -> None:
    """Block serving the registry; returns after SIGINT/SIGTERM."""
    _more_descriptors()
    asyncio.run(serve(config, on_ready))


def _more_descriptors() -> None:
    """Raise the soft descriptor limit to the hard one (as Go programs do): every
    connection costs one, and 1024 is a common default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit is more than the kernel takes: keep soft
            pass
