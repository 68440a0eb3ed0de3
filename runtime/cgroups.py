"""Per-container cgroups on cgroup v1, v2 and hybrid hosts.

v1 (and the v1 half of a hybrid host, where the controllers live): one
directory per controller hierarchy, nested under soko's own cgroup there,
as runc does with a relative cgroupsPath. Pure v2: `/soko/<id>` at the root
of the unified tree, because v2 forbids enabling controllers below a cgroup
that holds processes (soko's own usually does). The v2 tree of a hybrid host
has no controllers and is left alone.

The container's first process joins before it execs, so no process ever
runs outside its limits. On v1 it writes "0" (its only thread) to `tasks`:
moving a process through cgroup.procs takes a global lock whose first use
waits for an RCU grace period (~10 ms, the largest single cost of starting
a container), while moving the calling thread alone skips it.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field

from .errors import CgroupError

# v1 controllers a container gets a cgroup in (cpuset needs cpus/mems copied
# in first and limits nothing we offer; name=systemd belongs to systemd).
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "devices", "freezer", "blkio")
V2_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD = 100_000

# Devices a container may use (Docker's default list); everything else only mknod.
DEVICE_RULES = [
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
]


@dataclass
class Hierarchy:
    """One mounted cgroup hierarchy (v1 controller or the v2 unified one) and soko's place in it."""
    version: int  # 1 or 2
    mount: str
    controllers: frozenset[str]
    own: str  # soko's own cgroup in this hierarchy ("/" at the root)


@dataclass
class System:
    """The cgroup hierarchies of this machine, as /proc/self/mountinfo shows them."""
    hierarchies: list[Hierarchy]

    @property
    def v2(self) -> Hierarchy | None:
        return next((h for h in self.hierarchies if h.version == 2), None)

    @property
    def mode(self) -> str:
        """"v2" (unified only), "hybrid" (v1 controllers plus a v2 tree) or "v1"."""
        has_v1 = any(h.version == 1 for h in self.hierarchies)
        if not has_v1:
            return "v2"
        return "hybrid" if self.v2 else "v1"

    def v1(self, controller: str) -> Hierarchy | None:
        return next((h for h in self.hierarchies if h.version == 1 and controller in h.controllers), None)


_system: System | None = None


def system() -> System:
    """The cgroup mounts of this host and soko's place in them (read once)."""
    global _system
    if _system is not None:
        return _system
    own_v1: dict[str, str] = {}
    own_v2 = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            num, ctrls, path = line.rstrip("\n").split(":", 2)
            if num == "0" and ctrls == "":
                own_v2 = path
            for c in ctrls.split(","):
                own_v1[c] = path
    hierarchies: list[Hierarchy] = []
    seen: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _src, superopts = (right.split() + ["", "", ""])[:3]
            mount = fields[4].replace("\\040", " ")
            if fstype == "cgroup2" and fields[3] == "/":
                try:
                    with open(os.path.join(mount, "cgroup.controllers")) as c:
                        ctrls = frozenset(c.read().split())
                except OSError:
                    continue
                if "2" not in seen:
                    seen.add("2")
                    hierarchies.append(Hierarchy(2, mount, ctrls, own_v2))
            elif fstype == "cgroup" and fields[3] == "/":
                ctrls = frozenset(o for o in superopts.split(",") if o in own_v1 or o.startswith("name="))
                key = ",".join(sorted(ctrls))
                if not ctrls or key in seen:
                    continue
                seen.add(key)
                own = next((own_v1[c] for c in ctrls if c in own_v1), "/")
                hierarchies.append(Hierarchy(1, mount, ctrls, own))
    _system = System(hierarchies)
    return _system


@dataclass
class Resources:
    """A container's limits (--memory, --cpus, --pids-limit); None: no limit."""
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap, bytes (Docker: twice memory)
    cpus: float | None = None
    pids: int | None = None  # -1: unlimited


@dataclass
class Cgroups:
    """The directories of one container's cgroups; `paths` is what to join and remove."""
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> list[str]:
        return list(self.paths)


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(f"cgroup: writing {value!r} to {path}: {e.strerror}") from None


def relative_path(container_id: str) -> str:
    return f"soko/{container_id}"


def v2_path(sysinfo: System, container_id: str) -> str:
    """Where the container's cgroup goes in the v2 tree."""
    h = sysinfo.v2
    assert h is not None
    if sysinfo.mode == "v2":
        return os.path.join(h.mount, "soko", container_id)
    return os.path.join(h.mount, h.own.lstrip("/"), "soko", container_id)


def _v1_targets(sysinfo: System, cid: str) -> list[tuple[Hierarchy, str]]:
    out: list[tuple[Hierarchy, str]] = []
    seen: set[str] = set()
    for ctrl in V1_CONTROLLERS:
        h = sysinfo.v1(ctrl)
        if h is None or h.mount in seen:
            continue
        seen.add(h.mount)
        out.append((h, os.path.join(h.mount, h.own.lstrip("/"), "soko", cid)))
    return out


def plan(container_id: str) -> list[str]:
    """The directories `create` makes for this container (known before it makes them)."""
    sysinfo = system()
    if sysinfo.mode == "v2":
        return [v2_path(sysinfo, container_id)]
    return [p for _h, p in _v1_targets(sysinfo, container_id)]


def create(container_id: str, res: Resources) -> Cgroups:
    """Make the container's cgroups and set its limits (before any process joins)."""
    sysinfo = system()
    cg = Cgroups()
    try:
        if sysinfo.mode == "v2":
            _create_v2(sysinfo, container_id, res, cg)
        else:
            _create_v1(sysinfo, container_id, res, cg)
    except BaseException:
        destroy(cg)
        raise
    return cg


def _create_v1(sysinfo: System, cid: str, res: Resources, cg: Cgroups) -> None:
    for ctrl, wanted in (("memory", res.memory), ("pids", res.pids), ("cpu", res.cpus)):
        if wanted is not None and sysinfo.v1(ctrl) is None:
            raise CgroupError(f"cgroup: the {ctrl} controller is not mounted on this host")
    for h, path in _v1_targets(sysinfo, cid):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cgroup: creating {path}: {e.strerror}") from None
        cg.paths.append(path)
        if "memory" in h.controllers and res.memory is not None:
            _write(f"{path}/memory.limit_in_bytes", str(res.memory))
            if res.memory_swap is not None and os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                _write(f"{path}/memory.memsw.limit_in_bytes", str(res.memory_swap))
        if "pids" in h.controllers and res.pids is not None:
            _write(f"{path}/pids.max", "max" if res.pids < 0 else str(res.pids))
        if "cpu" in h.controllers and res.cpus is not None:
            _write(f"{path}/cpu.cfs_period_us", str(CFS_PERIOD))
            _write(f"{path}/cpu.cfs_quota_us", str(max(1000, int(res.cpus * CFS_PERIOD))))
        if "devices" in h.controllers:
            _write(f"{path}/devices.deny", "a")
            for rule in DEVICE_RULES:
                _write(f"{path}/devices.allow", rule)


def _enable(parent: str, controllers: list[str]) -> None:
    try:
        with open(f"{parent}/cgroup.subtree_control") as f:
            have = set(f.read().split())
    except OSError as e:
        raise CgroupError(f"cgroup: reading {parent}: {e.strerror}") from None
    missing = [c for c in controllers if c not in have]
    if missing:
        _write(f"{parent}/cgroup.subtree_control", " ".join("+" + c for c in missing))


def _create_v2(sysinfo: System, cid: str, res: Resources, cg: Cgroups) -> None:
    h = sysinfo.v2
    assert h is not None
    need = [c for c, on in (("memory", res.memory is not None), ("pids", res.pids is not None),
                            ("cpu", res.cpus is not None)) if on]
    for c in need:
        if c not in h.controllers:
            raise CgroupError(f"cgroup: the {c} controller is not available in {h.mount}")
    avail = [c for c in V2_CONTROLLERS if c in h.controllers]
    base = os.path.join(h.mount, "soko")
    os.makedirs(base, exist_ok=True)
    _enable(h.mount, avail)
    _enable(base, avail)
    path = os.path.join(base, cid)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CgroupError(f"cgroup: creating {path}: {e.strerror}") from None
    cg.paths.append(path)
    if res.memory is not None:
        _write(f"{path}/memory.max", str(res.memory))
        if res.memory_swap is not None and os.path.exists(f"{path}/memory.swap.max"):
            _write(f"{path}/memory.swap.max", str(max(0, res.memory_swap - res.memory)))
    if res.pids is not None:
        _write(f"{path}/pids.max", "max" if res.pids < 0 else str(res.pids))
    if res.cpus is not None:
        _write(f"{path}/cpu.max", f"{max(1000, int(res.cpus * CFS_PERIOD))} {CFS_PERIOD}")


def join_self(paths: list[str]) -> None:
    """Move the calling, single-threaded process into every cgroup (the
    container's first process does this): v1 through `tasks`, see above."""
    for p in paths:
        if os.path.exists(f"{p}/tasks"):
            _write(f"{p}/tasks", "0")
        else:
            _write(f"{p}/cgroup.procs", "0")


def _pids(path: str) -> list[int]:
    try:
        with open(f"{path}/cgroup.procs") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def destroy(cg: Cgroups | list[str], timeout: float = 5.0) -> None:
    """Kill whatever is left in the cgroups and remove them. Idempotent."""
    paths = cg.paths if isinstance(cg, Cgroups) else list(cg)
    deadline = time.monotonic() + timeout
    for path in reversed(paths):
        delay = 0.001
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(f"cgroup: removing {path}: {e.strerror}") from None
            if os.path.exists(f"{path}/cgroup.kill"):
                try:
                    _write(f"{path}/cgroup.kill", "1")
                except CgroupError:
                    pass
            for pid in _pids(path):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def sweep_orphans(min_age: float = 60.0) -> int:
    """Remove empty container cgroups older than `min_age` seconds.

    A container's cgroups always hold its processes while it runs and are
    removed when it ends, so an empty one that has been around for a while
    lost its container (its state directory was deleted, or another store's
    soko was killed before it could record it). Cheap: one listdir per tree."""
    sysinfo = system()
    parents = {os.path.join(h.mount, h.own.lstrip("/"), "soko") for h in sysinfo.hierarchies if h.version == 1}
    if sysinfo.v2 is not None:
        parents.add(os.path.join(sysinfo.v2.mount, "soko"))
    now = time.time()
    removed = 0
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for n in names:
            p = os.path.join(parent, n)
            if len(n) != 64 or not os.path.isdir(p):
                continue
            try:
                if now - os.stat(p).st_mtime < min_age or _pids(p):
                    continue
                os.rmdir(p)
                removed += 1
            except OSError:
                pass
    return removed


def freeze(paths: list[str], on: bool, timeout: float = 5.0) -> list[str]:
    """Freeze (or thaw) the processes of a container's cgroups; returns the paths it acted on.

    v1: the freezer hierarchy's freezer.state; v2: cgroup.freeze (whichever the paths have)."""
    done = []
    for p in paths:
        if os.path.exists(f"{p}/freezer.state"):
            _write(f"{p}/freezer.state", "FROZEN" if on else "THAWED")
            want, probe = ("FROZEN" if on else "THAWED"), f"{p}/freezer.state"
        elif os.path.exists(f"{p}/cgroup.freeze"):
            _write(f"{p}/cgroup.freeze", "1" if on else "0")
            want, probe = ("frozen 1" if on else "frozen 0"), f"{p}/cgroup.events"
        else:
            continue
        done.append(p)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(probe) as f:
                    if want in f.read():
                        break
            except OSError:
                break
            time.sleep(0.005)
    return done
