"""Container state on disk, and the sweep that cleans up after killed runs.

Each container has `<store root>/containers/<id>/` holding state.json, its
upper and work directories and the runc bundle when one is used. The
process that runs the container holds an exclusive flock on the directory
itself for as long as it lives; the kernel drops it however that process
ends. So a later run that can take the lock knows the owner is gone (no pid
reuse questions) and cleans up: any mount left under the directory, the OCI
runtime's container, the cgroups, and with --rm the directory itself.
Without --rm the container stays, marked exited.

The sweep also removes empty container cgroups older than a minute, whose
record is gone (see cgroups.sweep_orphans).

state.json is written once when the container is created (everything that
cleanup needs is known by then) and again at exit only for kept containers:
on some disks every freed block costs milliseconds.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from storage.private import private_dir

from . import cgroups, syscalls as sc
from .errors import ContainerError, NameConflict

STALE_NEW_DIR = 60.0  # seconds before an unfinished `.new-*` directory is swept


@dataclass
class State:
    id: str
    name: str | None
    image: str  # image ID (config digest)
    image_ref: str
    created: float
    owner_pid: int
    runtime: str
    rm: bool
    status: str = "running"  # running, exited
    exit_code: int | None = None
    pid: int | None = None  # host pid of the container's first process
    cgroups: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # chain IDs of the snapshots it uses
    oci_root: str | None = None  # runc/crun --root
    oci_id: str | None = None
    oci_binary: str | None = None

    @classmethod
    def load(cls, path: Path) -> "State":
        data = json.loads(path.read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class Container:
    """A container directory owned (locked) by this process."""

    def __init__(self, root: Path, state: State, lock_fd: int):
        self.dir = root
        self.state = state
        self._lock_fd = lock_fd

    @property
    def id(self) -> str:
        return self.state.id

    def save(self, fresh: bool = False) -> None:
        """Write state.json; atomically (temp + rename) unless the directory is still private."""
        data = json.dumps(asdict(self.state), indent=1)
        if fresh:
            (self.dir / "state.json").write_text(data)
            return
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(data)
        os.rename(tmp, self.dir / "state.json")

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def containers_dir(store_root: Path) -> Path:
    return Path(os.path.abspath(store_root)) / "containers"


@contextmanager
def _global_lock(base: Path) -> Iterator[None]:
    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _states(base: Path) -> Iterator[tuple[Path, State | None]]:
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


def new_id() -> str:
    return os.urandom(32).hex()


def new_state(name: str | None, image: str, image_ref: str, runtime: str, rm: bool,
              cid: str | None = None) -> State:
    return State(cid or new_id(), name.lstrip("/") if name else None, image, image_ref, time.time(),
                 os.getpid(), runtime, rm)


def _lock_dir(path: Path, block: bool = True) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def create(store_root: Path, state: State) -> Container:
    """The container's directory, locked by this process, visible only when complete."""
    base = containers_dir(store_root)
    private_dir(base)
    new = base / f".new-{state.id}"
    new.mkdir(mode=0o700)
    lock_fd = _lock_dir(new)
    assert lock_fd is not None
    c = Container(new, state, lock_fd)
    try:
        c.save(fresh=True)  # not visible before the rename below
        if state.name is None:
            os.rename(new, base / state.id)
        else:
            with _global_lock(base):
                for _d, st in _states(base):
                    if st is not None and st.name == state.name:
                        raise NameConflict(f'Conflict. The container name "/{state.name}" is already in use '
                                           f'by container "{st.id}". You have to remove (or rename) that '
                                           "container to be able to reuse that name.")
                os.rename(new, base / state.id)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        os.close(lock_fd)
        raise
    c.dir = base / state.id
    return c


def _try_lock(d: Path) -> int | None:
    """The lock of a container whose owner is gone, or None while it lives."""
    return _lock_dir(d, block=False)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    if "\\" not in field:
        return field
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


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
    """Everything a container holds outside its directory: mounts, OCI state, cgroups."""
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
    if st.cgroups:
        cgroups.destroy(st.cgroups)


def remove_dir(d: Path) -> None:
    """Delete a container directory; overlay work dirs can hold root-only 000 dirs."""
    def onerror(func, path, exc):
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return
        try:
            os.chmod(os.path.dirname(path), 0o700)
            func(path)
        except OSError:
            pass

    shutil.rmtree(d, onerror=onerror)


def sweep(store_root: Path, on_event: Callable[[str, str], None] | None = None) -> int:
    """Clean up containers whose soko process died. Returns how many were swept."""
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
        if st is not None and st.status == "exited" and not st.rm:
            continue  # a stopped container kept for later: nothing runs, nothing to do
        try:
            fd = _try_lock(d)
        except FileNotFoundError:
            continue  # removed meanwhile
        if fd is None:
            continue
        try:
            release_resources(d, st)
            if st is None or st.rm or n.startswith(".new-"):
                remove_dir(d)
            else:
                st.status = "exited"
                if st.exit_code is None:
                    st.exit_code = 137
                Container(d, st, -1).save()
            swept += 1
            if on_event:
                on_event("swept", f"cleaned up container {st.id if st else n} left by a killed soko")
        finally:
            os.close(fd)
    return swept
