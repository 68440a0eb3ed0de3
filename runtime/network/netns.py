"""Named network namespaces: /run/soko/netns/<container ID>, bind-mounted as `ip netns` does.

A container's namespace is made by soko before its process starts, so both
executors join it by path (the built-in child with setns, runc through the
spec's `path`) and soko can configure it first. The bind mount keeps it
alive across restarts of the process and is the one thing to remove.

The directory is a shared mount point of its own (as /run/netns is), so
that mount namespaces copied from the host as slaves (systemd services,
other runtimes) see a namespace's unmount and do not keep it alive.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .. import syscalls as sc
from ..errors import ContainerError

NETNS_DIR = "/run/soko/netns"


def path_of(cid: str) -> str:
    return os.path.join(NETNS_DIR, cid)


def _is_mount_point(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _prepare_dir() -> None:
    os.makedirs(NETNS_DIR, mode=0o711, exist_ok=True)
    if _is_mount_point(NETNS_DIR):
        return
    try:
        sc.mount(NETNS_DIR, NETNS_DIR, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, NETNS_DIR, None, sc.MS_SHARED | sc.MS_REC)
    except ContainerError:
        pass  # a private directory still works; only the propagation to copies is lost


def create(cid: str) -> None:
    """Make the container's namespace (no links in it but lo)."""
    _prepare_dir()
    remove(cid)  # left by a start that was killed half-way
    target = path_of(cid)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd_file = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd_file)
        sc.unshare(sc.CLONE_NEWNET)
        try:
            sc.mount("/proc/thread-self/ns/net", target, None, sc.MS_BIND)
        finally:
            sc.setns(home, sc.CLONE_NEWNET)
    except BaseException:
        remove(cid)
        raise
    finally:
        os.close(home)


@contextmanager
def entered(cid: str) -> Iterator[int]:
    """Inside the block the thread is in the container's namespace (so sockets opened there
    belong to it) and the value is a descriptor of it. The thread is back home afterwards."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path_of(cid), os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
            try:
                yield fd
            finally:
                sc.setns(home, sc.CLONE_NEWNET)
        finally:
            os.close(fd)
    finally:
        os.close(home)


def exists(cid: str) -> bool:
    return os.path.exists(path_of(cid))


def remove(cid: str) -> None:
    """Unmount and delete the namespace's file (idempotent)."""
    target = path_of(cid)
    try:
        sc.umount2(target, sc.MNT_DETACH)
    except ContainerError:
        pass
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def forget_others(keep: str) -> None:
    """In a private copy of the host's mounts (the runc helper's): detach every other container's
    namespace, so a long-running helper does not keep them alive after they are removed."""
    prefix = NETNS_DIR + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in points:
        if mp.startswith(prefix) and mp != keep:
            try:
                sc.umount2(mp, sc.MNT_DETACH)
            except ContainerError:
                pass
