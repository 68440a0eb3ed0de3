"""Entering a container: its namespaces (setns), its cgroups, its root.

`exec`, health checks, `cp` and `top` work on a running container from
outside: a forked process joins the container's cgroups (through the host's
cgroup mounts, so before anything else), then its namespaces, the mount
namespace last (it sets the process's root and working directory to the
container's root, where paths resolve as they do for the container). A
stopped container has no namespace to join: `in_root` mounts its snapshot
in a private mount namespace and chroots into it instead.
"""
from __future__ import annotations

import os
from typing import Callable

from . import cgroups, syscalls as sc

# The mount namespace last: after it, /proc and /sys/fs/cgroup are the container's.
_ORDER = [("cgroup", sc.CLONE_NEWCGROUP), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
          ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID), ("mnt", sc.CLONE_NEWNS)]


def namespaces(pid: int, only: tuple[str, ...] | None = None) -> list[tuple[int, int]]:
    """(CLONE_NEW* flag, open descriptor) of each namespace of `pid` that is not ours."""
    out = []
    try:
        for name, flag in _ORDER:
            if only is not None and name not in only:
                continue
            theirs = f"/proc/{pid}/ns/{name}"
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
            out.append((flag, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError:
        for _flag, fd in out:
            os.close(fd)
        raise
    return out


def cgroup_paths(pid: int) -> list[str]:
    """The host directories of `pid`'s cgroups, in the hierarchies soko manages."""
    sysinfo = cgroups.system()
    out = []
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        num, ctrls, path = line.split(":", 2)
        if num == "0" and ctrls == "":
            h = sysinfo.v2 if sysinfo.mode == "v2" else None
        else:
            h = next((x for x in sysinfo.hierarchies if x.version == 1
                      and x.controllers & set(ctrls.split(","))), None)
        if h is not None:
            p = os.path.join(h.mount, path.lstrip("/"))
            if os.path.isdir(p):
                out.append(p)
    return out


def join(pid: int, only: tuple[str, ...] | None = None, with_cgroups: bool = True) -> None:
    """In a forked, single-threaded process: become part of container `pid` (see the module doc).

    Joining a PID namespace applies to children only: fork once more after this."""
    paths = cgroup_paths(pid) if with_cgroups else []
    fds = namespaces(pid, only)
    if paths:
        cgroups.join_self(paths)
    for flag, fd in fds:
        sc.setns(fd, flag)
        os.close(fd)


def in_root(mounts: list, target: str, base: str) -> None:
    """In a forked process: a private mount namespace with the snapshot mounted on `target`,
    then chroot there (a stopped container's root, for cp)."""
    from . import child

    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        child.mount_root(child.Rootfs(target, mounts, base=base), w)
    finally:
        os.close(w)
        os.close(r)
    os.chroot(target)
    os.chdir("/")


def start_inside(enter: Callable[[], None], fn: Callable[[], None]) -> tuple[int, int]:
    """Fork; the child runs `enter()` then `fn()` and exits. Returns (pid, error pipe) for
    finish_inside; in between the caller streams through descriptors `fn` was given."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(err_r)
            enter()
            fn()
        except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
            if isinstance(e, OSError) and e.strerror:
                msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
            else:
                msg = str(e) or type(e).__name__
            try:
                os.write(err_w, msg.encode()[:4000])
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(err_w)
    return pid, err_r


def finish_inside(pid: int, err_r: int) -> str | None:
    """Wait for a start_inside child; its error message, None when it succeeded."""
    from .waiting import read_all

    try:
        msg = read_all(err_r).decode(errors="replace")
    finally:
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
    if msg:
        return msg
    if status != 0:
        return f"failed with status {os.waitstatus_to_exitcode(status)}"
    return None
