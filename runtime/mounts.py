"""Spec mounts performed into a container root, before pivot_root.

Options are parsed the way runc does (flags vs. filesystem data), targets are
resolved with paths.secure_join and mounted on through an O_PATH descriptor,
so a symlink in the image cannot redirect a mount onto the host.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import syscalls as sc
from .errors import StartError
from .paths import ensure_target, open_inside

_FLAGS = {
    # name: (set, clear)
    "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0), "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0), "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0), "remount": (sc.MS_REMOUNT, 0),
    "noatime": (sc.MS_NOATIME, 0), "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0), "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "nostrictatime": (0, sc.MS_STRICTATIME),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0),
    "defaults": (0, 0), "nosymfollow": (sc.MS_NOSYMFOLLOW, 0),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


@dataclass
class Parsed:
    """An OCI mount's options as mount(2) takes them."""
    flags: int
    propagation: list[int]
    data: str


def parse_options(options: list[str]) -> Parsed:
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    for o in options:
        if o in _FLAGS:
            s, c = _FLAGS[o]
            flags = (flags | s) & ~c
        elif o in _PROPAGATION:
            prop.append(_PROPAGATION[o])
        else:
            data.append(o)
    return Parsed(flags, prop, ",".join(data))


@dataclass
class CgroupMounts:
    """What /sys/fs/cgroup shows inside: cgroup2 (own namespace) or v1 binds."""
    mode: str  # v1, hybrid, v2
    binds: list[tuple[str, str]]  # (name under /sys/fs/cgroup, host cgroup dir)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def mount_one(rootfs: str, m: dict, cg: CgroupMounts | None, extra_flags: int = 0) -> None:
    dest = m["destination"]
    mtype = m.get("type") or ""
    src = m.get("source") or ""
    opts = parse_options(list(m.get("options") or []))
    is_bind = bool(opts.flags & sc.MS_BIND) or mtype == "bind"
    if is_bind:
        try:
            st = os.stat(src)
        except OSError as e:
            raise StartError(f"mount {src} on {dest}: {e.strerror}") from None
        host = ensure_target(rootfs, dest, stat.S_ISDIR(st.st_mode))
    else:
        host = ensure_target(rootfs, dest, True)
    fd = open_inside(rootfs, host)
    try:
        target = _fd_path(fd)
        if is_bind:
            sc.mount(src, target, None, sc.MS_BIND | (opts.flags & sc.MS_REC))
        elif mtype == "cgroup":
            _mount_cgroup(target, opts, cg, rootfs, host)
        elif mtype == "sysfs":
            try:
                sc.mount(src or "sysfs", target, "sysfs", opts.flags | extra_flags, opts.data or None)
            except OSError:
                sc.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                _remount(rootfs, host, sc.MS_RDONLY | (opts.flags & ~(sc.MS_BIND | sc.MS_REC)))
        else:
            sc.mount(src or mtype, target, mtype, opts.flags | extra_flags, opts.data or None)
    finally:
        os.close(fd)
    if is_bind:
        flags = (opts.flags | extra_flags) & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if flags:
            _remount(rootfs, host, flags)
    if opts.propagation:
        # A descriptor opened now is on the new mount, not the directory beneath it.
        fd = open_inside(rootfs, host)
        try:
            for p in opts.propagation:
                sc.mount(None, _fd_path(fd), None, p)
        finally:
            os.close(fd)


def _remount(rootfs: str, host: str, flags: int) -> None:
    fd = open_inside(rootfs, host)
    try:
        sc.mount(None, _fd_path(fd), None, sc.MS_REMOUNT | sc.MS_BIND | flags)
    finally:
        os.close(fd)


def _mount_cgroup(target: str, opts: Parsed, cg: CgroupMounts | None, rootfs: str, host: str) -> None:
    flags = opts.flags & ~sc.MS_RDONLY
    if cg is None:
        return
    if cg.mode == "v2":
        sc.mount("cgroup2", target, "cgroup2", opts.flags)
        return
    sc.mount("tmpfs", target, "tmpfs", flags, "mode=755")
    for name, hostdir in cg.binds:
        sub = ensure_target(rootfs, os.path.join("/", os.path.relpath(host, rootfs), name), True)
        fd = open_inside(rootfs, sub)
        try:
            sc.mount(hostdir, _fd_path(fd), None, sc.MS_BIND)
        finally:
            os.close(fd)
        _remount(rootfs, sub, sc.MS_RDONLY | flags)
    if opts.flags & sc.MS_RDONLY:
        fd = open_inside(rootfs, host)
        try:
            sc.mount(None, _fd_path(fd), None, sc.MS_REMOUNT | sc.MS_RDONLY | flags, "mode=755")
        finally:
            os.close(fd)


# Device nodes every container gets: bind-mounted from the host's /dev onto
# files in a nodev tmpfs, so a node the container makes itself (it has
# CAP_MKNOD) opens nothing even where no device cgroup guards it (cgroup v2).
DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]
DEV_LINKS = [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")]


def populate_dev(rootfs: str) -> None:
    dev = os.path.join(rootfs, "dev")
    for name in DEVICES:
        host = ensure_target(rootfs, f"/dev/{name}", False)
        fd = open_inside(rootfs, host)
        try:
            sc.mount(f"/dev/{name}", _fd_path(fd), None, sc.MS_BIND)
        finally:
            os.close(fd)
    for name, target in DEV_LINKS:
        try:
            os.symlink(target, os.path.join(dev, name))
        except FileExistsError:
            pass


def mask_paths(masked: list[str], readonly: list[str]) -> None:
    """After pivot_root: hide and freeze what runc hides and freezes."""
    for p in masked:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", p, None, sc.MS_BIND)
    for p in readonly:
        try:
            os.lstat(p)
        except OSError:
            continue
        sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, p, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                 | sc.MS_NOEXEC)
