"""Starting a container's process: everything it needs, kept so it can start again.

`Launch` is what `create` decides once (the OCI spec, the active snapshot,
the cgroup limits, the compiled seccomp filter, the /etc files) and keeps
as launch.json in the container's directory; `start` turns it into a
running process with the built-in executor or an OCI runtime, every time
the container starts: `soko run` in the foreground, the monitor for a
detached container and each of its restarts, and a build step.

The root and the /etc files are mounted in the container's own mount
namespace, on mount points shared by all containers of the store
(`<store>/runtime/rootfs`, `<store>/runtime/etc`): each namespace sees only
its own mounts there.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from storage.private import private_dir

from . import cgroups, child, snapshotter as snapmod
from .errors import StartError
from .executor_builtin import OverlayUnavailable
from .snapshotter import Active

Event = Callable[[str, str], None]
# Why overlay failed, per filesystem (st_dev) of a store in this process: a store on
# overlayfs cannot hold an upper directory, while another store on ext4 can.
_overlay_broken: dict[int, str] = {}


@dataclass
class Launch:
    """How to start the container's process, decided once by `create` (launch.json)."""
    id: str
    runtime: str  # builtin | runc | crun
    spec: dict  # the OCI runtime spec; root.path is the shared mount point
    snapshotter: str  # overlay | copy | auto (overlay, falling back to copy)
    active: Active
    base: str  # the store root
    etc_files: dict[str, str] = field(default_factory=dict)  # hosts, hostname, resolv.conf
    copy_up: list[tuple[str, str]] = field(default_factory=list)  # new named volumes to seed
    resources: dict = field(default_factory=dict)  # cgroups.Resources fields
    seccomp_filter: str | None = None  # the compiled filter's file (built-in executor)
    oci_id: str | None = None
    service: dict = field(default_factory=dict)  # restart policy, health check, stop signal (service.py)
    network: dict = field(default_factory=dict)  # a bridge network's plan (network/endpoint.Plan); {}: none/host

    def to_json(self) -> dict:
        d = asdict(self)
        d["active"] = self.active.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Launch":
        d = dict(d)
        d["active"] = Active.from_json(d["active"])
        d["copy_up"] = [tuple(x) for x in d.get("copy_up", [])]
        return cls(**d)

    def save(self, directory: Path) -> None:
        tmp = directory / "launch.json.tmp"
        tmp.write_text(json.dumps(self.to_json()))
        os.rename(tmp, directory / "launch.json")

    @classmethod
    def load(cls, directory: Path) -> "Launch":
        return cls.from_json(json.loads((directory / "launch.json").read_text()))


def shared_dir(root: Path, name: str) -> Path:
    p = root / "runtime" / name
    if not p.is_dir():
        private_dir(p)
    return p


def resources(memory: int | None, cpus: float | None, pids_limit: int | None) -> dict:
    return {"memory": memory, "memory_swap": 2 * memory if memory else None, "cpus": cpus,
            "pids": -1 if pids_limit == 0 else pids_limit}


def cgroup_binds(paths: list[str]) -> list[tuple[str, str]]:
    sysinfo = cgroups.system()
    out = []
    for h in sysinfo.hierarchies:
        for p in paths:
            if p.startswith(h.mount.rstrip("/") + "/"):
                out.append((os.path.basename(h.mount), p))
    return out


def _cgroup_mounts(sysinfo: cgroups.System, paths: list[str]):
    from .mounts import CgroupMounts

    return CgroupMounts(sysinfo.mode, cgroup_binds(paths) if sysinfo.mode != "v2" else [])


def candidates(name: str, dev: int) -> list[str]:
    if name != "auto":
        return [name]
    return ["copy"] if dev in _overlay_broken else ["overlay", "copy"]


def start(launch: Launch, bundle: Path, stdin: int | None, stdout: int, stderr: int, *,
          detached: bool = False, on_event: Event | None = None):
    """Start the process; returns the executor's task (pid, master, exit_code(), close()).

    With snapshotter "auto", an overlay the kernel refuses falls back to the copy
    snapshotter, and `launch.snapshotter` says which one the container now uses."""
    root = Path(launch.base)
    etc = dict(launch.etc_files)
    joining = None
    if launch.network:
        joining, etc = connect(launch, etc)
    try:
        return _start_on(launch, bundle, stdin, stdout, stderr, detached, on_event, etc,
                         joining.done if joining else None)
    finally:
        if joining is not None:
            joining.done()  # (it was, unless the process could not be made)


def _start_on(launch: Launch, bundle: Path, stdin: int | None, stdout: int, stderr: int, detached: bool,
              on_event: Event | None, etc: dict[str, str], ready: Callable[[], None] | None):
    root = Path(launch.base)
    dev = os.stat(root).st_dev
    names = candidates(launch.snapshotter, dev)
    if launch.snapshotter == "auto" and names == ["copy"] and on_event:
        on_event("fallback", f"overlayfs unavailable ({_overlay_broken[dev]}); using a copy of the layers")
    for i, name in enumerate(names):
        snap = snapmod.get(name)
        rootfs = child.Rootfs(str(shared_dir(root, "rootfs")), snap.prepare(launch.active), base=str(root),
                              etc_dir=str(shared_dir(root, "etc")), etc_files=etc)
        try:
            task = _start(launch, bundle, rootfs, stdin, stdout, stderr, detached, ready)
        except OverlayUnavailable as e:
            if i + 1 == len(names):
                raise StartError(f"cannot mount the container root: {e}") from None
            _overlay_broken[dev] = str(e)
            if on_event:
                on_event("fallback", f"overlayfs unavailable ({e}); using a copy of the layers")
            continue
        launch.snapshotter = name
        return task
    raise StartError("cannot mount the container root")


def connect(launch: Launch, etc: dict[str, str]):
    """Put the container on its bridge network (its namespace, address, ports; released by
    containers.release_resources): (the network.endpoint.Joining to finish before its process
    runs, the /etc files with its address)."""
    from . import etc_files
    from .network.endpoint import Plan, up

    plan = Plan.from_json(launch.network)
    if plan.dns:  # a user-defined network may have been removed since the container was made
        from storage.metadata import MetadataDB

        from .network import networks

        networks.get(MetadataDB(Path(launch.base) / "metadata.db"), plan.network_id)
    joining = up(launch.id, plan)
    return joining, etc_files.with_address(etc, joining.lease.address, launch.spec.get("hostname", ""))


def _start(launch: Launch, bundle: Path, rootfs: child.Rootfs, stdin: int | None, stdout: int, stderr: int,
           detached: bool, ready: Callable[[], None] | None):
    """`ready()` must return before the container's process runs: the built-in executor calls it
    while its child sets up the container, an OCI runtime gets the container after it."""
    if launch.runtime != "builtin":
        from . import executor_oci

        if ready is not None:
            ready()

        return executor_oci.start(launch.runtime, bundle, launch.oci_id or "", launch.spec, rootfs,
                                  list(launch.copy_up), stdin, stdout, stderr, detached=detached)
    from . import executor_builtin

    sysinfo = cgroups.system()
    cg = cgroups.create(launch.id, cgroups.Resources(**launch.resources))
    seccomp_filter = None
    if launch.seccomp_filter:
        with open(launch.seccomp_filter, "rb") as f:
            seccomp_filter = f.read()
    setup = child.ChildSetup(launch.spec, rootfs, cg.paths, _cgroup_mounts(sysinfo, cg.paths),
                             list(launch.copy_up), (0, 1, 2), -1, -1, None, seccomp_filter)
    return executor_builtin.start(setup, stdin, stdout, stderr, ready)
