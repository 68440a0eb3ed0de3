"""Attaching to a monitored container: its output as it is logged, stdin into its FIFO.

`start -a` and a foreground `run` of a container that needs a monitor (a
restart policy, a health check) follow the json-file log from where it was
when the container started until that run ends, writing each record to
stdout or stderr as it was written, and return the container's exit code.
With -i, soko's stdin goes to the monitor's attach socket. Signals soko gets
(^C) are passed on to the container, as Docker's sig-proxy does.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Callable

from . import logfile
from .containers import LIVE

if TYPE_CHECKING:
    from .container import Container

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def attach(c: "Container", stdin: int | None, stdout: int, stderr: int,
           on_output: Callable[[bytes], None] | None = None, start: bool = False) -> int:
    """Follow `c`'s current (with `start`: next) run to its end; its exit code."""
    from .waiting import write_all

    offset = os.path.getsize(c.log_path) if c.log_path.exists() else 0
    st = c.refresh()
    since = st.started_at
    if start:
        c.start()
        st = c.refresh()
        since = st.started_at
    old = {}
    if threading.current_thread() is threading.main_thread():
        def forward(signum, _frame):
            try:
                c.kill(signum)
            except Exception:  # noqa: BLE001 - the container may have ended meanwhile
                pass
        old = {s: signal.signal(s, forward) for s in FORWARDED}
    if stdin is not None and c.launch.service.get("open_stdin"):
        threading.Thread(target=_feed, args=(stdin, c.dir), daemon=True).start()

    def done() -> bool:
        s = c.refresh()
        return s.status not in LIVE or s.finished_at >= since

    try:
        for rec in logfile.follow(c.log_path, offset, done):
            if on_output is not None:
                on_output(rec.data)
            else:
                write_all(stderr if rec.stream == "stderr" else stdout, rec.data)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return c.refresh().exit_code


def _feed(src: int, directory) -> None:
    """soko's stdin to the monitor's attach socket; its end ends the container's stdin."""
    import socket

    from .monitor import attach_path

    path, dfd = attach_path(directory)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            while True:
                data = os.read(src, 65536)
                if not data:
                    break
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # until the monitor has taken it all (it closes its end)
    except OSError:
        return
    finally:
        os.close(dfd)
