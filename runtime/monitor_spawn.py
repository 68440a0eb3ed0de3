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

BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path += sys.argv[2].split(':') if sys.argv[2] else []; "
        "from runtime.monitor import main; main(sys.argv[3:])")


def code_root() -> str:
    """The directory holding the runtime and storage packages, for a lean process's sys.path."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def library_paths() -> str:
    """Where pyroute2 lives (site-packages), for a monitor that sets up a bridge network: found
    without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.dirname(list(spec.submodule_search_locations)[0])


def detached(argv: list[str], keep: list[int]) -> None:
    """Start `argv` as a daemon: in a session of its own, adopted by init (or the nearest
    subreaper), stdio on /dev/null, inheriting the descriptors in `keep`. Returns at once."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            for fd in keep:
                os.set_inheritable(fd, True)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def spawn(c: "Container") -> int:
    """Start `c`'s monitor (`c` locked by us) and wait for its report; the container's pid."""
    lock = c.cdir.lock_fd
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    libs = library_paths() if c.launch.network else ""
    argv = [sys.executable, "-S", "-c", BOOT, code_root(), libs, str(c.dir), str(lock), str(rep_w)]
    try:
        detached(argv, [lock, rep_w])
    finally:
        os.close(rep_w)
    try:
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
