"""Starting a container's monitor: double-forked, holding the container's lock from soko's hands.

soko forks; the child starts a new session and forks again, so the monitor
belongs to no terminal and no process of soko's, and its parent exits at once
(soko reaps it: no zombie, and the monitor is adopted by init or the nearest
subreaper). It inherits the container directory's locked descriptor (so the
lock never lapses between soko and the monitor) and a pipe on which it
reports whether the container started: soko returns only then, with the
container's pid or its error.

The grandchild runs monitor.serve in the process soko already is (`forked`):
no second interpreter to start, no second round of imports (50-150 ms of a
`run -d`). What an exec would have dropped goes first: its stdio is
/dev/null, every close-on-exec descriptor is /dev/null too (no lock, pipe or
socket of soko's outlives it in the monitor), signal handlers are back to
their defaults, and its command line names the container. Every metadata
database's SQLite connection in the process is closed before the fork
(storage.metadata.close_all; each reopens when next used): SQLite keeps
per-process state about every open database file, which a child must not
inherit and then use.
A soko with other threads running cannot fork safely (a lock held by one of
them stays held in the child forever): it execs a fresh lean interpreter
(`python -S`) running monitor.main instead, as does the DNS responder.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Callable

from .errors import StartError
from .waiting import read_all

if TYPE_CHECKING:
    from .container import Container

TITLE = "runtime.monitor"  # how a monitor shows in ps, forked or not
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


def can_fork() -> bool:
    """Whether this process may fork a monitor: it has no other thread."""
    return len(os.listdir("/proc/self/task")) == 1


def forked(main: Callable[[], int], keep: list[int], title: str) -> None:
    """Run `main` as a daemon forked from this process (see the module doc); returns at once.
    The caller has closed its databases and has no other thread."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child's copy of the buffer could be written twice
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            _as_if_exec(keep, title)
            code = main()
        finally:
            os._exit(code if isinstance(code, int) else 125)  # never back into soko's own code
    os.waitpid(pid, 0)


def _as_if_exec(keep: list[int], title: str) -> None:
    """What a fresh process would have: stdio on /dev/null, the close-on-exec descriptors gone
    (each a /dev/null, so a stale object closing its descriptor later closes only that), default
    signal handlers, a command line of its own."""
    import fcntl

    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
        if fd <= 2 or fd == null or fd in keep:
            continue
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                os.dup2(null, fd, inheritable=False)
        except OSError:
            pass  # the listing's own descriptor, closed by now
    os.close(null)
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    from .syscalls import set_process_title

    set_process_title(title)


def spawn(c: "Container") -> int:
    """Start `c`'s monitor (`c` locked by us) and wait for its report; the container's pid."""
    lock = c.cdir.lock_fd
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    try:
        if can_fork():
            from storage.metadata import close_all

            close_all()
            directory = c.dir

            def serve() -> int:
                from .monitor import serve

                return serve(directory, lock, rep_w)

            forked(serve, [lock, rep_w], f"{TITLE} {c.id} {directory}")  # the ID first: it may be cut
        else:
            libs = library_paths() if c.launch.network else ""
            detached([sys.executable, "-S", "-c", BOOT, code_root(), libs, str(c.dir), str(lock), str(rep_w)],
                     [lock, rep_w])
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
