"""The built-in executor: soko's side of a container's life.

soko forks the container's first process straight into a new PID namespace
(unshare(CLONE_NEWPID) for its children, then setns back), so that process
is PID 1 and soko is its parent: soko gets its exit status from waitpid,
forwards signals to it, and the kernel reaps everything else in the
namespace when it ends. The mounts are made inside the container's own
mount namespace, so they vanish with it, even if soko is killed; the first
process also has PDEATHSIG=SIGKILL (set again once it has become the
container's user, since a change of uid clears it), so a killed soko takes
its container along, whatever the user. What remains for a later sweep is only directories and cgroups.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from . import child, syscalls as sc
from .errors import StartError
from .waiting import Forwarder, kill_and_reap, wait


class OverlayUnavailable(Exception):
    """The overlay mount failed in the child; the caller falls back to copying."""


@dataclass
class IO:
    stdin: int | None  # None: /dev/null
    stdout: int = 1
    stderr: int = 2
    on_output: Callable[[bytes], None] | None = None  # capture stdout+stderr instead


def exit_status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def run(setup: child.ChildSetup, io: IO, on_started: Callable[[int], None] | None = None) -> int:
    """Start the container described by `setup`, wait for it, return its exit status."""
    tty = bool(setup.spec["process"].get("terminal"))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    life_r, life_w = os.pipe2(os.O_CLOEXEC)
    to_close = [err_w, life_r]
    out_r = None
    sock_parent = None
    devnull = None
    stdin = io.stdin
    if stdin is None:
        devnull = stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        to_close.append(devnull)
    stdout, stderr = io.stdout, io.stderr
    if io.on_output is not None and not tty:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        stdout = stderr = out_w
        to_close.append(out_w)
    if tty:
        import socket

        sock_parent, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        to_close.append(sock_child.detach())
        setup.console_sock = to_close[-1]
    setup.stdio = (stdin, stdout, stderr)
    setup.err_w, setup.life_r = err_w, life_r
    pid = 0
    with Forwarder() as fwd:
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
            msg = _read_all(err_r)
            os.close(err_r)
            if msg:
                os.waitpid(pid, 0)
                code, _, text = msg.decode(errors="replace").partition(" ")
                if code.isdigit() and int(code) == child.OVERLAY_FAILED:
                    raise OverlayUnavailable(text)
                raise StartError(text, int(code) if code.isdigit() else 125)
            fwd.started(pid)
            if on_started:
                on_started(pid)
            if tty:
                from .tty import Terminal

                master = _receive_master(sock_parent)
                with Terminal(master, io.stdin, io.stdout if io.on_output is None else None,
                              io.on_output, pid) as term:
                    status = term.pump(fwd)
            else:
                status = wait(pid, fwd, out_r, io.on_output)
            return exit_status(status)
        except BaseException:
            kill_and_reap(pid)
            raise
        finally:
            os.close(life_w)
            if out_r is not None:
                os.close(out_r)
            if sock_parent is not None:
                sock_parent.close()


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 4096)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _receive_master(sock) -> int:
    import socket

    msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise StartError("the container did not send its terminal")
    return fds[0]
