"""The system calls Python's `os` lacks, through ctypes. The only module with ctypes.

Each wrapper raises SyscallError (errno plus what was attempted) instead of
returning -1, so callers read like the C they replace.
"""
from __future__ import annotations

import ctypes
import os

from .errors import SyscallError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Namespaces (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_MM_ARG_START = 8
PR_SET_MM_ARG_END = 9
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECCOMP_MODE_FILTER = 2

# openat2(2) resolve flags.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_SYSCALLS = {
    # name: (x86_64, aarch64)
    "pivot_root": (155, 41),
    "capget": (125, 90),
    "capset": (126, 91),
    "openat2": (437, 437),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
}
_ARCH_INDEX = {"x86_64": 0, "aarch64": 1}.get(os.uname().machine)


def _nr(name: str) -> int:
    if _ARCH_INDEX is None:
        raise SyscallError(38, f"{name} (unsupported architecture {os.uname().machine})")
    return _SYSCALLS[name][_ARCH_INDEX]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise SyscallError(ctypes.get_errno(), what)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {fstype or ''} {source or ''} on {target}".replace("  ", " "))


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_nr("pivot_root"), _b(new_root), _b(put_old)), "pivot_root")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


_titles: list = []  # the buffers /proc/self/cmdline points into, kept for the process's life


def set_process_title(title: str) -> None:
    """What ps shows for this process: its name (comm) becomes the first word of `title`, its
    command line `title`: in a buffer of its own where the kernel allows it (CAP_SYS_RESOURCE, as
    systemd's rename_process), else written over the original arguments, cut to their length."""
    import mmap

    raw = title.encode() + b"\0"
    name = ctypes.create_string_buffer(title.split()[0].encode()[:15])
    try:
        prctl(PR_SET_NAME, ctypes.addressof(name))
    except SyscallError:
        pass
    buf = mmap.mmap(-1, len(raw))
    buf.write(raw)
    start = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    try:  # the kernel wants start <= end after each step: which goes first depends on the old range
        try:
            prctl(PR_SET_MM, PR_SET_MM_ARG_START, start)
            prctl(PR_SET_MM, PR_SET_MM_ARG_END, start + len(raw))
        except SyscallError:
            prctl(PR_SET_MM, PR_SET_MM_ARG_END, start + len(raw))
            prctl(PR_SET_MM, PR_SET_MM_ARG_START, start)
        _titles.append(buf)
        return
    except SyscallError:
        pass
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # stat's fields 48 and 49 (from 3 on here)
    size = arg_end - arg_start
    if size > 1:  # the last byte stays NUL: the kernel then reads the area as plain arguments
        ctypes.memmove(arg_start, raw[:size - 1].ljust(size, b"\0"), size)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of this thread, as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_nr("capget"), ctypes.byref(hdr), ctypes.byref(data)), "capget")
    join = lambda f: getattr(data[0], f) | (getattr(data[1], f) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_nr("capset"), ctypes.byref(hdr), ctypes.byref(data)), "capset")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): the kernel resolves `path` (RESOLVE_IN_ROOT: as if dirfd were /)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_libc.syscall(_nr("openat2"), dirfd, _b(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))), f"openat2 {path}")


FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100


def mount_fs(fstype: str, target: str, strings: list[tuple[str, str]], flags: list[str] = ()) -> None:
    """Mount a new filesystem through the fsopen/fsconfig API: each option is set
    on its own, so no one-page limit applies (overlay's `lowerdir+`, Linux 6.8+)."""
    fs = _check(_libc.syscall(_nr("fsopen"), _b(fstype), 1), f"fsopen {fstype}")  # FSOPEN_CLOEXEC
    try:
        for key, value in strings:
            _check(_libc.syscall(_nr("fsconfig"), fs, FSCONFIG_SET_STRING, _b(key), _b(value), 0),
                   f"{fstype}: {key}={value}")
        for key in flags:
            _check(_libc.syscall(_nr("fsconfig"), fs, FSCONFIG_SET_FLAG, _b(key), None, 0), f"{fstype}: {key}")
        _check(_libc.syscall(_nr("fsconfig"), fs, FSCONFIG_CMD_CREATE, None, None, 0), f"{fstype}: create")
        mnt = _check(_libc.syscall(_nr("fsmount"), fs, 1, 0), f"fsmount {fstype}")  # FSMOUNT_CLOEXEC
        try:
            _check(_libc.syscall(_nr("move_mount"), mnt, b"", _AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
                   f"move_mount {fstype} to {target}")
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def socket(family: int, kind: int, proto: int = 0) -> int:
    """A bare socket descriptor (close-on-exec), without importing the socket module."""
    return _check(_libc.socket(family, kind | os.O_CLOEXEC, proto), "socket")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE): fails with EEXIST instead of replacing `dst`
    (os.rename would silently replace an empty directory)."""
    _check(_libc.renameat2(_AT_FDCWD, _b(src), _AT_FDCWD, _b(dst), RENAME_NOREPLACE), f"rename {src} to {dst}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_filter(program: bytes) -> None:
    """Install a classic BPF seccomp filter (8-byte sock_filter entries) on this thread.

    Needs no_new_privs or CAP_SYS_ADMIN; it stays across fork and execve."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
