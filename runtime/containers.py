"""Containers on disk: a private directory per container, its live state, its lock, the sweep.

`<store root>/containers/<id>/` holds state.json (below), launch.json (what
starting the process needs, see launch.py), the snapshot's directories
(init/, upper/, work/, or merged/ for the copy snapshotter), the log
(`<id>-json.log`, Docker's json-file format) and, for runc, the bundle's
config.json. The user-visible record (name, image, configuration) is a row
in the store's database (records.py); build steps have only the directory.

Whoever runs the container holds an exclusive flock on its directory for as
long as it lives: the monitor for a detached container, the `soko run`
process for a foreground one. The kernel drops the lock however that process
ends, so a process that can take it knows the owner is gone (no pid-reuse
questions). Only the holder writes state.json. A reader that finds the state
running but the lock free knows the owner died: the sweep then releases what
the container held (mounts, the OCI runtime's container, cgroups) and records
the truth: exited, killed with its owner; with --rm the directory goes too.

The sweep also removes empty container cgroups older than a minute whose
record is gone (see cgroups.sweep_orphans).

state.json is written when the container is created (everything cleanup
needs is known by then), when it starts and when it stops; a foreground
--rm container writes it once: on some disks every freed block costs
milliseconds.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from storage.private import private_dir

from . import cgroups, syscalls as sc
from .errors import ContainerError

STALE_NEW_DIR = 60.0  # seconds before an unfinished `.new-*` directory is swept
STOP_FILE = "stop-requested"  # a user stopped the container: its owner restarts nothing
Event = Callable[[str, str], None]

# Docker's states; "running" and "restarting" need a live owner.
CREATED, RUNNING, RESTARTING, EXITED, REMOVING, DEAD = ("created", "running", "restarting", "exited",
                                                        "removing", "dead")
LIVE = (RUNNING, RESTARTING)


@dataclass
class State:
    """A container's state.json: what its owner, `ps` and a later sweep need to know."""
    id: str
    runtime: str
    rm: bool
    created: int = 0  # ns since the epoch, as all times here
    status: str = CREATED
    pid: int = 0  # host pid of the container's first process while it runs
    exit_code: int = 0
    error: str = ""
    started_at: int = 0
    finished_at: int = 0
    restart_count: int = 0
    health: dict | None = None  # Docker's State.Health: Status, FailingStreak, Log
    owner: int = 0  # pid of the lock holder
    monitor: bool = False  # the owner is a monitor process (else a foreground soko)
    stop_requested: bool = False  # stopped by a user: no restart until the next start
    cgroups: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # chain IDs of the snapshots it uses
    oci_root: str | None = None  # runc/crun --root
    oci_id: str | None = None
    oci_binary: str | None = None
    netns: str = ""  # the network namespace soko makes at each start (bridge networks), to release

    @classmethod
    def load(cls, path: Path) -> "State":
        data = json.loads(path.read_text())
        known = cls.__dataclass_fields__
        st = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(st.exit_code, int):
            st.exit_code = 0
        return st


def containers_dir(store_root: Path | str) -> Path:
    return Path(os.path.abspath(store_root)) / "containers"


def new_id() -> str:
    return os.urandom(32).hex()


def now_ns() -> int:
    return time.time_ns()


def _lock_fd(path: Path, block: bool = True) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


class ContainerDir:
    """A container's directory and state; `lock_fd` >= 0 while this process owns it."""

    def __init__(self, path: Path, state: State, lock_fd: int = -1):
        self.dir = path
        self.state = state
        self.lock_fd = lock_fd

    @property
    def id(self) -> str:
        return self.state.id

    @classmethod
    def open(cls, store_root: Path | str, cid: str) -> "ContainerDir":
        d = containers_dir(store_root) / cid
        return cls(d, State.load(d / "state.json"))

    def reload(self) -> State:
        self.state = State.load(self.dir / "state.json")
        return self.state

    def save(self, fresh: bool = False) -> None:
        """Write state.json; atomically (temp + rename) unless the directory is not visible yet."""
        data = json.dumps(asdict(self.state), indent=1)
        if fresh:
            (self.dir / "state.json").write_text(data)
            return
        tmp = self.dir / f"state.json.{os.getpid()}"
        tmp.write_text(data)
        os.rename(tmp, self.dir / "state.json")

    def try_lock(self) -> bool:
        """Take the lock if its owner is gone (or there was none); False while one lives."""
        if self.lock_fd >= 0:
            return True
        fd = _lock_fd(self.dir, block=False)
        if fd is None:
            return False
        self.lock_fd = fd
        return True

    def locked_by_other(self) -> bool:
        if self.lock_fd >= 0:
            return False
        try:
            fd = _lock_fd(self.dir, block=False)
        except FileNotFoundError:
            return False
        if fd is None:
            return True
        os.close(fd)
        return False

    def wait_unlocked(self, timeout: float | None = None) -> bool:
        """Until the owner lets go (or `timeout` seconds); True when it did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while self.locked_by_other():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def unlock(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def release_resources(self) -> None:
        release_resources(self.dir, self.state)


def create_dir(store_root: Path | str, state: State,
               before_visible: Callable[[Path], None] | None = None) -> ContainerDir:
    """The container's directory, locked by this process, visible under its ID only when complete.

    `before_visible(tmp)` runs first (recording the name, making the snapshot): when it raises,
    nothing is left."""
    base = containers_dir(store_root)
    private_dir(base)
    new = base / f".new-{state.id}"
    new.mkdir(mode=0o700)
    lock_fd = _lock_fd(new)
    assert lock_fd is not None
    c = ContainerDir(new, state, lock_fd)
    try:
        c.save(fresh=True)
        if before_visible is not None:
            before_visible(new)
        os.rename(new, base / state.id)
    except BaseException:
        remove_dir(new)
        os.close(lock_fd)
        raise
    c.dir = base / state.id
    return c


def states(store_root: Path | str) -> Iterator[tuple[Path, State | None]]:
    base = containers_dir(store_root)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith("."):
            continue
        d = base / n
        try:
            yield d, State.load(d / "state.json")
        except (OSError, ValueError, TypeError):
            yield d, None


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    if "\\" not in text:
        return text
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path).rstrip("/")
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape(line.split()[4])
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return sorted(out, key=lambda p: p.count("/"), reverse=True)


def release_resources(d: Path, st: State | None) -> None:
    """Everything a container holds outside its directory: mounts, OCI state, its network, cgroups."""
    for mp in mounts_under(d):
        try:
            sc.umount2(mp, sc.MNT_DETACH)
        except ContainerError:
            pass
    if st is None:
        return
    if st.oci_id and st.oci_binary and st.oci_root:
        import subprocess

        subprocess.run([st.oci_binary, "--root", st.oci_root, "delete", "--force", st.oci_id],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if st.netns:
        from .network.endpoint import down

        down(st.id)
    if st.cgroups:
        cgroups.destroy(st.cgroups)


def remove_dir(d: Path) -> None:
    """Delete a directory tree; overlay work dirs can hold root-only 000 dirs."""
    def onerror(func, path, exc):
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return
        try:
            os.chmod(os.path.dirname(path), 0o700)
            func(path)
        except OSError:
            pass

    shutil.rmtree(d, onerror=onerror)


def owner_died(st: State) -> None:
    """Record what became of a container whose owner died while it ran: it was killed with it."""
    who = (f"its monitor process (pid {st.owner})" if st.monitor
           else f"the soko process running it (pid {st.owner})")
    st.error = f"{who} died; the container was killed with it"
    st.exit_code = 137
    st.status = EXITED
    st.pid = 0
    st.finished_at = now_ns()
    if st.health:
        st.health["Status"] = "unhealthy"


def sweep(store_root: Path | str, on_event: Event | None = None,
          forget: Callable[[str], None] | None = None) -> int:
    """Clean up after containers whose owner died. Returns how many were swept.

    `forget(id)` drops the record of a removed --rm container."""
    base = containers_dir(store_root)
    cgroups.sweep_orphans()
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return 0
    swept = 0
    now = time.time()
    for n in names:
        d = base / n
        if n.startswith(".new-"):
            try:
                if now - d.stat().st_mtime < STALE_NEW_DIR:
                    continue
            except FileNotFoundError:
                continue
        elif n.startswith("."):
            continue
        try:
            st = State.load(d / "state.json")
        except (OSError, ValueError, TypeError):
            st = None
        if st is not None and st.status not in LIVE and not st.rm:
            continue  # created or stopped, kept for later: nothing runs, nothing to do
        try:
            fd = _lock_fd(d, block=False)
        except FileNotFoundError:
            continue  # removed meanwhile
        if fd is None:
            continue
        try:
            try:
                st = State.load(d / "state.json")  # as its owner left it
            except (OSError, ValueError, TypeError):
                st = None
            release_resources(d, st)
            if st is None or st.rm or n.startswith(".new-"):
                remove_dir(d)
                if st is not None and forget is not None:
                    forget(st.id)
            elif st.status in LIVE:
                owner_died(st)
                ContainerDir(d, st, fd).save()
            else:
                continue
            swept += 1
            if on_event:
                on_event("swept", f"cleaned up container {st.id if st else n} left by a killed soko")
        finally:
            os.close(fd)
    return swept
