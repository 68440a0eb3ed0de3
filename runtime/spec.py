"""Image config + run options -> an OCI runtime spec (config.json).

One spec drives both executors: the built-in one reads the same dict that
runc or crun get as a bundle. Defaults are Docker's: its mounts, masked and
read-only paths, default capabilities, device rules and seccomp profile,
plus noNewPrivileges (soko always sets it).
"""
from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

from . import caps, cgroups, seccomp
from .errors import StartError
from .options import RunOptions, Tmpfs
from .users import ExecUser

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

BASE_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["ro", "nosuid", "noexec", "nodev"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
]

DEVICE_RULES: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}] + [
    {"allow": True, "type": t, "major": ma, "minor": mi, "access": acc}
    for t, ma, mi, acc in [
        ("c", None, None, "m"), ("b", None, None, "m"),
        ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"),
        ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
        ("c", 10, 200, "rwm"),
    ]
]


def _strip_none(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if v is not None}


def process_args(image_config: dict, opts: RunOptions) -> list[str]:
    """Docker's rule: --entrypoint replaces ENTRYPOINT and drops the image's CMD;
    a command replaces CMD."""
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
    else:
        entry = list(image_config.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(image_config.get("Cmd") or [])
    args = entry + cmd
    if not args:
        raise StartError("no command specified", 125)
    return args


def _set(env: list[str], entry: str) -> None:
    key = entry.split("=", 1)[0]
    for i, e in enumerate(env):
        if e.split("=", 1)[0] == key:
            env[i] = entry
            return
    env.append(entry)


def merge_env(image_env: list[str], extra: list[str], hostname: str, home: str, tty: bool) -> list[str]:
    """Docker's order: PATH (if the image has none), HOSTNAME, TERM; then the
    image's ENV, then --env-file and -e; HOME from passwd when still unset."""
    env: list[str] = []
    if not any(e.startswith("PATH=") for e in image_env + extra):
        env.append(f"PATH={DEFAULT_PATH}")
    env.append(f"HOSTNAME={hostname}")
    if tty:
        env.append("TERM=xterm")
    for e in list(image_env) + list(extra):
        _set(env, e)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home}")
    return env


@dataclass
class Mount:
    """A user mount: bind (volume or host path) or tmpfs, in container terms."""
    destination: str
    type: str  # "bind" or "tmpfs"
    source: str
    options: list[str] = field(default_factory=list)


def tmpfs_mount(t: Tmpfs) -> Mount:
    opts = ["nosuid", "nodev", "noexec"]
    for o in t.options:
        if o in ("exec", "suid", "dev"):
            opts = [x for x in opts if x != "no" + o]
        elif o not in opts:
            opts.append(o)
    return Mount(t.target, "tmpfs", "tmpfs", opts)


@dataclass
class SpecInput:
    """What the OCI runtime spec is built from."""
    image_config: dict
    options: RunOptions
    args: list[str]
    env: list[str]
    user: ExecUser
    hostname: str
    cwd: str
    rootfs: str
    etc_files: dict[str, str]  # container path -> host file
    mounts: list[Mount]
    cgroups_path: str | None
    cgroup_mode: str  # v1, hybrid, v2
    seccomp: seccomp.Profile | None = None  # Docker-format profile; None: unconfined
    netns_path: str | None = None  # a network namespace made by soko (bridge networks), joined by path


def rlimits() -> list[dict[str, Any]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [{"type": "RLIMIT_NOFILE", "hard": hard, "soft": soft}]


def build(inp: SpecInput) -> dict[str, Any]:
    opts = inp.options
    default_caps = list(caps.DOCKER_DEFAULT)
    process: dict[str, Any] = {
        "terminal": bool(opts.tty),
        "user": {"uid": inp.user.uid, "gid": inp.user.gid},
        "args": inp.args,
        "env": inp.env,
        "cwd": inp.cwd,
        "capabilities": {"bounding": default_caps, "effective": default_caps, "permitted": default_caps},
        "rlimits": rlimits(),
        "noNewPrivileges": True,
    }
    if inp.user.additional_gids:
        process["user"]["additionalGids"] = list(inp.user.additional_gids)
    mounts = [dict(m, options=list(m["options"])) for m in BASE_MOUNTS]
    for dest in ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts"):
        if dest in inp.etc_files:
            mounts.append({"destination": dest, "type": "bind", "source": inp.etc_files[dest],
                           "options": ["rbind", "rprivate"]})
    for m in sorted(inp.mounts, key=lambda m: m.destination.rstrip("/").count("/")):
        mounts.append({"destination": m.destination, "type": m.type, "source": m.source,
                       "options": list(m.options)})
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if inp.netns_path:
        namespaces.append({"type": "network", "path": inp.netns_path})
    elif opts.network != "host":
        namespaces.append({"type": "network"})
    if inp.cgroup_mode == "v2":
        namespaces.append({"type": "cgroup"})
    resources: dict[str, Any] = {"devices": [_strip_none(r) for r in DEVICE_RULES]}
    if opts.memory is not None:
        resources["memory"] = {"limit": opts.memory, "swap": 2 * opts.memory}
    if opts.cpus is not None:
        resources["cpu"] = {"quota": max(1000, int(opts.cpus * cgroups.CFS_PERIOD)),
                            "period": cgroups.CFS_PERIOD}
    if opts.pids_limit is not None:
        resources["pids"] = {"limit": -1 if opts.pids_limit == 0 else opts.pids_limit}
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if inp.cgroups_path:
        linux["cgroupsPath"] = inp.cgroups_path
    if inp.seccomp is not None:
        linux["seccomp"] = seccomp.resolve(inp.seccomp, process["capabilities"]["bounding"])
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inp.rootfs, "readonly": bool(opts.read_only)},
        "hostname": inp.hostname,
        "mounts": mounts,
        "linux": linux,
    }
    return spec


def cwd_of(image_config: dict, opts: RunOptions) -> str:
    from .paths import lexical_clean

    return lexical_clean(opts.workdir or image_config.get("WorkingDir") or "/")
