"""Starting a container's monitor: double-forked, a fresh lean interpreter, the lock handed over.

soko forks; the child starts a new session and forks again, so the monitor
belongs to no terminal and no process of soko's, and its parent exits at once
(soko reaps it: no zombie, and the monitor is adopted by init or the nearest
subreaper). The grandchild execs `python -S` running monitor.main: no site
packages, only what running a container needs is imported. It inherits the
container directory's locked descriptor (so the lock never lapses between
soko and the monitor) and a pipe on which it reports whether the container
started: soko returns only then, with the container's pid or its error.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .errors import StartError
from .waiting import read_all

if TYPE_CHECKING:
    from .container import Container

BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from runtime.monitor import main; main(sys.argv[2:])"


def _code_root() -> str:
    """The directory holding the runtime and storage packages, for the monitor's sys.path."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spawn(c: "Container") -> int:
    """Start `c`'s monitor (`c` locked by us) and wait for its report; the container's pid."""
    lock = c.cdir.lock_fd
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    argv = [sys.executable, "-S", "-c", BOOT, _code_root(), str(c.dir), str(lock), str(rep_w)]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            os.set_inheritable(lock, True)
            os.set_inheritable(rep_w, True)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    os.close(rep_w)
    try:
        os.waitpid(pid, 0)
        msg = read_all(rep_r).decode(errors="replace")
    finally:
        os.close(rep_r)
    word, _, rest = msg.partition(" ")
    if word == "ok":
        return int(rest.strip() or 0)
    if word == "error":
        code, _, text = rest.partition(" ")
        raise StartError(text.strip(), int(code) if code.isdigit() else 125)
    raise StartError(f"the container's monitor did not start ({msg.strip() or 'no report'})")
