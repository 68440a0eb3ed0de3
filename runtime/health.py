"""Health checks as the monitor runs them: one probe at a time, through exec, never blocking it.

Docker's rules: the first probe runs one interval after the container
starts, the next one interval after the previous one ended; a probe that
outlives its timeout is killed (its whole process group) and counts as a
failure with exit code -1; a success makes the container healthy; failures
count once the start period is over, and `retries` of them in a row make it
unhealthy. The last five results are kept with their output (4 KiB each).
"""
from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from . import containers
from .errors import ContainerError
from .logfile import rfc3339
from .service import MAX_LOG_ENTRIES, MAX_OUTPUT, go_duration

if TYPE_CHECKING:
    from .monitor import Monitor


class Check:
    """The probe of one container's run; its results go into the monitor's state."""

    def __init__(self, m: "Monitor", init_pid: int):
        self.m = m
        self.init_pid = init_pid
        self.running = False
        self.task = None
        self.out_r = -1
        self.pidfd = -1
        self.output = b""
        self.began_ns = 0
        self.began = 0.0

    def fds(self) -> list[int]:
        return [fd for fd in (self.out_r, self.pidfd) if fd >= 0] if self.running else []

    def deadline(self) -> float:
        return self.began + self.m.probe.timeout

    def start(self, container_started: float) -> None:
        from . import execs

        self.container_started = container_started
        self.began, self.began_ns, self.output = time.monotonic(), containers.now_ns(), b""
        r, w = os.pipe2(os.O_CLOEXEC)
        filt = None
        if self.m.launch.seccomp_filter:
            with open(self.m.launch.seccomp_filter, "rb") as f:
                filt = f.read()
        ex = execs.spec_for(self.m.launch.spec, self.m.probe.argv, seccomp_filter=filt)
        ex.new_session = True
        try:
            self.task = execs.start(self.init_pid, ex, None, w, w)
        except ContainerError as e:
            os.close(r)
            os.close(w)
            self.record(-1 if e.status == 1 else e.status, str(e))
            return
        os.close(w)
        self.out_r, self.pidfd, self.running = r, os.pidfd_open(self.task.helper), True

    def poll(self, ready: list[int], now: float) -> bool:
        """Read output, notice the end or the timeout; True when the probe is over."""
        if self.out_r in ready:
            data = os.read(self.out_r, 65536)
            if data:
                self.output = (self.output + data)[:MAX_OUTPUT]
        if self.pidfd in ready:
            from .monitor import drain_into

            drain_into(self.out_r, lambda d: setattr(self, "output", (self.output + d)[:MAX_OUTPUT]))
            status = self.m.wait_for(self.task.helper)
            self._close()
            self.record(os.waitstatus_to_exitcode(status), self.output.decode("utf-8", "replace"))
            return True
        if now >= self.deadline():
            self.abandon()
            self.record(-1, f"Health check exceeded timeout ({go_duration(self.m.probe.timeout)})")
            return True
        return False

    def abandon(self) -> None:
        """Kill the probe, its children too (it leads its own process group), and its helper."""
        for kill, pid in ((os.killpg, self.task.pid), (os.kill, self.task.helper)):
            if pid > 0:
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.m.wait_for(self.task.helper)
        self._close()

    def _close(self) -> None:
        for fd in (self.out_r, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.out_r = self.pidfd = -1
        self.running = False

    def record(self, code: int, output: str) -> None:
        """Docker's rules: a success makes it healthy; failures count once the start period is over,
        and `retries` failures in a row make it unhealthy."""
        st = self.m.st
        h = st.health or {"Status": "starting", "FailingStreak": 0, "Log": []}
        h["Log"] = (h.get("Log") or [])[-(MAX_LOG_ENTRIES - 1):] + [{
            "Start": rfc3339(self.began_ns), "End": rfc3339(containers.now_ns()), "ExitCode": code, "Output": output}]
        if code == 0:
            h["Status"], h["FailingStreak"] = "healthy", 0
        elif not (h["Status"] == "starting" and time.monotonic() - self.container_started < self.m.probe.start_period):
            h["FailingStreak"] = h.get("FailingStreak", 0) + 1
            if h["FailingStreak"] >= self.m.probe.retries:
                h["Status"] = "unhealthy"
        st.health = h
        self.m.save()
