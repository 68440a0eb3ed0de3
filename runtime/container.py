"""The container seam: create, start, wait, kill, stop, delete, with persisted state.

A container is created once (its record, directory, init layer and launch
plan: everything that can fail cheaply fails before anything runs), then
started any number of times: in the foreground by `soko run` itself
(runner.py: the fast path, no other process), or detached under a monitor
process (monitor.py) that outlives soko, keeps its logs, runs its health
check and applies its restart policy. Every other command (`stop`, `kill`,
`wait`, `exec`, `rm`) works on the persisted state from any soko process:
the pid of the container's first process, the owner's lock (containers.py)
and a stop request file the owner reads before it restarts anything.
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from . import containers, records
from .containers import LIVE, STOP_FILE, ContainerDir
from .errors import ContainerState, StartError
from .launch import Launch

if TYPE_CHECKING:
    from storage.images import ImageStore

Event = Callable[[str, str], None]
DEFAULT_STOP_TIMEOUT = 10


class Container:
    def __init__(self, store: "ImageStore", cdir: ContainerDir, record: records.Record | None = None):
        self.store = store
        self.cdir = cdir
        self.record = record
        self._launch: Launch | None = None

    # -- identity and state ------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.cdir.id

    @property
    def name(self) -> str:
        return self.record.name if self.record else self.id[:12]

    @property
    def dir(self) -> Path:
        return self.cdir.dir

    @property
    def state(self) -> containers.State:
        return self.cdir.state

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.id}-json.log"

    @property
    def launch(self) -> Launch:
        if self._launch is None:
            self._launch = Launch.load(self.dir)
        return self._launch

    def refresh(self) -> containers.State:
        """The state as its owner last wrote it; a live state without a live owner is swept first."""
        st = self.cdir.reload()
        if st.status in LIVE and not self.cdir.locked_by_other():
            containers.sweep(self.store.root, forget=self._forget)
            st = self.cdir.reload()
        return st

    @property
    def running(self) -> bool:
        return self.refresh().status in LIVE

    @classmethod
    def get(cls, store: "ImageStore", ref: str) -> "Container":
        """By full ID, name or unique ID prefix (records.resolve)."""
        rec = records.resolve(store.db, ref)
        try:
            cdir = ContainerDir.open(store.root, rec.id)
        except FileNotFoundError:
            records.delete(store.db, rec.id)
            from .errors import NoSuchContainer

            raise NoSuchContainer(f"No such container: {ref}") from None
        c = cls(store, cdir, rec)
        c.refresh()
        return c

    @classmethod
    def all(cls, store: "ImageStore") -> list["Container"]:
        """Every container with a record, newest first (their directories swept first)."""
        sweep(store)
        out = []
        for rec in records.all_records(store.db):
            try:
                out.append(cls(store, ContainerDir.open(store.root, rec.id), rec))
            except (FileNotFoundError, ValueError):
                continue
        return out

    def _forget(self, cid: str) -> None:
        records.delete(self.store.db, cid)

    # -- start -----------------------------------------------------------------------------
    def start(self, on_event: Event | None = None) -> bool:
        """Start the container detached, under a monitor; False when it was running already.

        Raises StartError (125/126/127) when its process cannot start; the container then
        stays, created, with the error recorded, as Docker leaves it."""
        if not self.cdir.try_lock():
            return False
        try:
            st = self.cdir.reload()
            if st.status in LIVE:  # we hold the lock: its owner is gone
                containers.owner_died(st)
            try:
                os.unlink(self.dir / STOP_FILE)
            except FileNotFoundError:
                pass
            st.stop_requested = False
            self.cdir.save()
            from .monitor_spawn import spawn

            spawn(self)
        finally:
            self.cdir.unlock()
        return True

    # -- signals and waiting ---------------------------------------------------------------
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the container's first process. SIGKILL and the stop signal stop it for
        good: its restart policy waits for the next start (Docker's rule)."""
        st = self.refresh()
        if st.status not in LIVE:
            raise ContainerState(f"Cannot kill container: {self.name}: Container {self.id} is not running")
        from .service import parse_signal

        if sig in (signal.SIGKILL, parse_signal((self.record.config.get("Config") or {}).get("StopSignal")
                                                if self.record else None)):
            self.request_stop()
        if st.pid:
            _signal(st.pid, sig)

    def request_stop(self) -> None:
        """Tell the owner not to restart the container when it ends."""
        (self.dir / STOP_FILE).touch()

    def stop(self, timeout: int | None = None) -> None:
        """The stop signal, then SIGKILL after `timeout` seconds (the container's, else 10)."""
        st = self.refresh()
        if st.status not in LIVE:
            return
        from .service import parse_signal

        cfg = (self.record.config.get("Config") or {}) if self.record else {}
        if timeout is None:
            timeout = cfg.get("StopTimeout", DEFAULT_STOP_TIMEOUT)
        self.request_stop()
        pid = st.pid
        if pid:
            pidfd = _pidfd(pid)
            if pidfd is not None:
                try:
                    _send(pidfd, parse_signal(cfg.get("StopSignal")))
                    if not _wait_fd(pidfd, max(0, timeout)):
                        _send(pidfd, signal.SIGKILL)
                        _wait_fd(pidfd, 10)
                finally:
                    os.close(pidfd)
        self.cdir.wait_unlocked(30)
        self.refresh()

    def wait(self, timeout: float | None = None) -> int:
        """Until the container next stops (now, when it is not running); its exit code."""
        st = self.refresh()
        if st.status not in LIVE:
            return st.exit_code
        seen = st.finished_at
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            time.sleep(0.05)
            st = self.refresh()
            if st.finished_at != seen or st.status not in LIVE:
                return st.exit_code
            if deadline is not None and time.monotonic() > deadline:
                raise ContainerState(f"container {self.name} is still running")

    # -- removal ---------------------------------------------------------------------------
    def delete(self, force: bool = False) -> None:
        """Remove the container: its directory, snapshot, log and record (-f: kill it first)."""
        st = self.refresh()
        if st.status in LIVE or self.cdir.locked_by_other():
            if not force:
                raise ContainerState(f"You cannot remove a running container {self.id}. Stop the container "
                                     "before attempting removal or force remove")
            self.request_stop()
            if st.pid:
                _signal(st.pid, signal.SIGKILL)
            if not self.cdir.wait_unlocked(30):
                raise ContainerState(f"container {self.id} did not stop")
        if not self.cdir.try_lock():
            raise ContainerState(f"container {self.id} is in use")
        try:
            st = self.cdir.reload()
            st.status = containers.REMOVING
            self.cdir.release_resources()
            containers.remove_dir(self.dir)
            records.delete(self.store.db, self.id)
            self.store.release(f"container:{self.id}")  # create.hold_owner: its image is gc's again
        finally:
            self.cdir.unlock()

    def endpoint(self, leases: Mapping[str, Any] | None = None):
        """The container's lease on its bridge network while it runs (network/leases.Lease:
        address, MAC, published ports), else None; looked up in `leases` (every container's,
        network.leases.snapshot()) when given, else in the table."""
        st = self.state
        if not st.netns or st.status != containers.RUNNING:
            return None
        if leases is not None:
            return leases.get(self.id)
        from .network.leases import reader

        table = reader()
        if table is None:
            return None
        try:
            return table.get(self.id)
        finally:
            table.close()

    # -- looking inside ----------------------------------------------------------------------
    def exec(self, args: list[str], *, env: list[str] | None = None, user: str | None = None,
             workdir: str | None = None, tty: bool = False, stdin: int | None = None, stdout: int = 1,
             stderr: int = 2, detach: bool = False):
        """Start another process in the running container (execs.py); its ExecTask."""
        from . import execs, seccomp
        from .launch import shared_dir

        st = self.refresh()
        if st.status != containers.RUNNING or not st.pid:
            raise ContainerState(f"Container {self.id} is not running")
        launch = self.launch
        filt = None
        if "seccomp" in launch.spec.get("linux", {}):
            path = launch.seccomp_filter or seccomp.compiled_filter_file(
                launch.spec["linux"]["seccomp"], shared_dir(Path(launch.base), "seccomp"))
            with open(path, "rb") as f:
                filt = f.read()
        ex = execs.spec_for(launch.spec, args, env, user, workdir, tty, filt)
        return execs.start(st.pid, ex, stdin, stdout, stderr, detach)

    def pids(self) -> list[int]:
        """Host pids of every process in the container (its PID namespace)."""
        st = self.refresh()
        if st.status not in LIVE or not st.pid:
            raise ContainerState(f"Container {self.id} is not running")
        try:
            ns = os.stat(f"/proc/{st.pid}/ns/pid").st_ino
        except OSError:
            return []
        out = []
        for n in os.listdir("/proc"):
            if n.isdigit():
                try:
                    if os.stat(f"/proc/{n}/ns/pid").st_ino == ns:
                        out.append(int(n))
                except OSError:
                    continue
        return sorted(out)

    @contextmanager
    def changes(self) -> Iterator[tuple[Path, list[str]]]:
        """(the change so far as an overlay upper directory, the layers beneath it, top first)."""
        from . import snapshotter

        launch = self.launch
        snap = snapshotter.get("overlay" if launch.snapshotter == "auto" else launch.snapshotter)
        if snap.name == "overlay":
            yield launch.active.upper, list(launch.active.lowers)
            return
        tmp = self.dir / f".changes-{os.getpid()}"
        try:
            yield snap.commit(launch.active, into=tmp), list(launch.active.lowers)
        finally:
            containers.remove_dir(tmp)

    @contextmanager
    def paused(self, pause: bool = True) -> Iterator[None]:
        """Freeze the container's processes (commit --pause) while the block runs."""
        from . import cgroups, nsenter

        st = self.refresh()
        paths = nsenter.cgroup_paths(st.pid) if pause and st.status in LIVE and st.pid else []
        frozen = cgroups.freeze(paths, True) if paths else []
        try:
            yield
        finally:
            if frozen:
                cgroups.freeze(frozen, False)


def sweep(store: "ImageStore", on_event: Event | None = None) -> int:
    """containers.sweep for a store: removed --rm containers lose their record too."""
    return containers.sweep(store.root, on_event, forget=lambda cid: records.delete(store.db, cid))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _send(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def _signal(pid: int, sig: int) -> None:
    fd = _pidfd(pid)
    if fd is not None:
        try:
            _send(fd, sig)
        finally:
            os.close(fd)


def _wait_fd(pidfd: int, timeout: float) -> bool:
    from .waiting import readable

    return bool(readable([pidfd], timeout))


__all__ = ["Container", "StartError", "sweep"]
