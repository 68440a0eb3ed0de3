"""Waiting for a container while forwarding signals to it, without losing any.

A Python signal handler runs between byte codes, so a signal that lands just
before soko blocks in waitpid() would wait with it until the container ends
(and a SIGTERM meant for the container would never reach it). Instead soko
blocks in poll() on a pidfd plus the signal wakeup fd, which the C-level
handler writes to: every signal wakes the wait, the Python handler forwards
it, and the wait resumes.
"""
from __future__ import annotations

import os
import select
import signal
import threading
from typing import Callable, Sequence, TypeVar

W = TypeVar("W")  # a descriptor (int), or an object with fileno() (a socket)


def ready(reading: Sequence[W], writing: Sequence[W] = (), timeout: float | None = None) -> tuple[list[W], list[W]]:
    """What select.select(reading, writing, [], timeout) answers (an end of file or an error
    counts as ready), by poll: select refuses a descriptor past 1024, which every descriptor
    of a process with many open is (a test worker holding snapshots, a busy server)."""
    poller = select.poll()
    by_fd: dict[int, W] = {}
    masks: dict[int, int] = {}
    for objs, mask in ((reading, select.POLLIN), (writing, select.POLLOUT)):
        for obj in objs:
            fd = obj if isinstance(obj, int) else obj.fileno()
            by_fd[fd] = obj
            masks[fd] = masks.get(fd, 0) | mask
    for fd, mask in masks.items():
        poller.register(fd, mask)
    done = select.POLLHUP | select.POLLERR | select.POLLNVAL
    readable: list[W] = []
    writable: list[W] = []
    for fd, got in poller.poll(None if timeout is None else max(0.0, timeout) * 1000):
        if got & (select.POLLIN | done) and masks[fd] & select.POLLIN:
            readable.append(by_fd[fd])
        if got & (select.POLLOUT | done) and masks[fd] & select.POLLOUT:
            writable.append(by_fd[fd])
    return readable, writable


def readable(fds: Sequence[W], timeout: float | None = None) -> list[W]:
    """Those of `fds` that can be read (or are at their end) within `timeout` seconds (None: wait)."""
    return ready(fds, (), timeout)[0]


FORWARDED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGCONT, signal.SIGALRM]


class Forwarder:
    """Forwards FORWARDED signals to `pid` once known; queues them before that.

    Off the main thread (a builder running steps in threads) Python cannot
    take signals: then nothing is installed and `fds` is empty."""

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self._old: dict = {}
        self._wake_r = -1
        self._wake_w = -1
        self._old_wakeup = -1

    def __enter__(self) -> "Forwarder":
        if threading.current_thread() is threading.main_thread():
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            self._old = {s: signal.signal(s, self._handle) for s in FORWARDED}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        if self._wake_r >= 0:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _handle(self, signum: int, _frame) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass
        else:
            self.pending.append(signum)

    def started(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            self._handle(self.pending.pop(0), None)

    @property
    def fds(self) -> list[int]:
        return [self._wake_r] if self._wake_r >= 0 else []

    def drain(self) -> None:
        try:
            while os.read(self._wake_r, 256):
                pass
        except (BlockingIOError, OSError):
            pass


def wait(pid: int, fwd: Forwarder, outs: Sequence[tuple[int, Callable[[bytes], None]]] = ()) -> int:
    """The raw wait status of `pid`; each (fd, sink) of `outs` is relayed until its EOF."""
    pidfd = os.pidfd_open(pid)
    sinks = dict(outs)
    try:
        watch = [pidfd] + fwd.fds + list(sinks)
        exited = False
        while not exited or sinks:
            got = readable(watch)
            if fwd.fds and fwd.fds[0] in got:
                fwd.drain()
            for fd in got:
                if fd in sinks:
                    data = os.read(fd, 65536)
                    if data:
                        sinks[fd](data)
                    else:
                        watch.remove(fd)
                        del sinks[fd]
            if pidfd in got:
                exited = True
                watch.remove(pidfd)
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]


def read_all(fd: int) -> bytes:
    """Everything until end-of-file (a pipe's writers all closed)."""
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child we started and collect it (an error is on its way up; no zombie stays)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
