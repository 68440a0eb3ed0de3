"""The built-in executor: soko's side of a container's life.

The owner (`soko run` in the foreground, the monitor for a detached
container) forks the container's first process straight into a new PID
namespace (unshare(CLONE_NEWPID) for its children, then setns back), so that
process is PID 1 and the owner is its parent: it gets the exit status from
waitpid, forwards signals to it, and the kernel reaps everything else in the
namespace when it ends. The mounts are made inside the container's own
mount namespace, so they vanish with it, even if the owner is killed; the
first process also has PDEATHSIG=SIGKILL (set again once it has become the
container's user, since a change of uid clears it), so a killed owner takes
its container along, whatever the user. What remains for a later sweep is
only directories and cgroups.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from . import child, syscalls as sc
from .errors import StartError
from .waiting import kill_and_reap, read_all


class OverlayUnavailable(Exception):
    """The overlay mount failed in the child; the caller falls back to copying."""


@dataclass
class Task:
    """A started container process (its first one, PID 1 of its namespace) and what ties it to us."""
    pid: int
    master: int | None = None  # -t: the pty master, ours to read and close
    life_w: int = -1  # kept open until the container ends (see child._die_with_soko)

    def close(self) -> None:
        if self.life_w >= 0:
            os.close(self.life_w)
            self.life_w = -1
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def exit_code(self, wait_status: int) -> int:
        return exit_status(wait_status)


def exit_status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def start(setup: child.ChildSetup, stdin: int | None, stdout: int, stderr: int,
          ready: Callable[[], None] | None = None) -> Task:
    """Fork the container's first process and wait until it has exec'd its command.

    With `ready`, the child sets up the container while ready() runs here, and waits for it to
    return before it becomes the container's process (see child.wait_for_go); an exception from
    ready() kills it. Raises OverlayUnavailable or StartError (with Docker's 125/126/127) when it
    could not."""
    tty = bool(setup.spec["process"].get("terminal"))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    life_r, life_w = os.pipe2(os.O_CLOEXEC)
    to_close = [err_w, life_r]
    sock_parent = None
    if stdin is None:
        stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        to_close.append(stdin)
    if tty:
        import socket

        sock_parent, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        to_close.append(sock_child.detach())
        setup.console_sock = to_close[-1]
    setup.stdio = (stdin, stdout, stderr)
    setup.err_w, setup.life_r = err_w, life_r
    setup.gated = ready is not None
    pid = 0
    own_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.unshare(sc.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(err_r)
                os.close(life_w)
                child.run(setup)  # never returns
        finally:
            if pid != 0:
                sc.setns(own_ns, sc.CLONE_NEWPID)
    finally:
        os.close(own_ns)
        for fd in to_close:
            os.close(fd)
    try:
        if ready is not None:
            ready()
            try:
                os.write(life_w, child.GO)
            except BrokenPipeError:
                pass  # the child is gone: why is on err_r
        msg = read_all(err_r)
        if msg:
            os.waitpid(pid, 0)
            code, _, text = msg.decode(errors="replace").partition(" ")
            if code.isdigit() and int(code) == child.OVERLAY_FAILED:
                raise OverlayUnavailable(text)
            raise StartError(text, int(code) if code.isdigit() else 125)
        master = _receive_master(sock_parent) if tty else None
        return Task(pid, master, life_w)
    except BaseException:
        kill_and_reap(pid)
        os.close(life_w)
        raise
    finally:
        os.close(err_r)
        if sock_parent is not None:
            sock_parent.close()


def _receive_master(sock) -> int:
    import socket

    msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise StartError("the container did not send its terminal")
    return fds[0]
