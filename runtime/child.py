"""The container's first process, between fork and exec (built-in executor).

Runs as PID 1 of a fresh PID namespace, forked from soko. It joins the
cgroups, makes its namespaces, builds the root (overlay or a prepared
directory), mounts what the spec asks for, pivots into the root, drops to
the user and Docker's capability set, sets no_new_privs, installs the
seccomp filter and execs the command. Any failure goes back to soko as "STATUS message" over a
close-on-exec pipe and the process exits; success closes the pipe.
Everything it needs is imported before the fork, and it never returns.
"""
from __future__ import annotations

import fcntl
import os
import resource
import signal
import stat
import struct
import sys
from dataclasses import dataclass, field

from . import caps, cgroups, mounts, syscalls as sc
from .errors import ContainerError, StartError
from .copy import copy_tree
from .etc_files import write_into
from .paths import ensure_target, mkdir_in_root, open_inside, secure_join
from .snapshotter import RootMount
from .waiting import readable

OVERLAY_FAILED = 200  # tells soko to fall back to the copy snapshotter

_NS = {"pid": 0, "mount": sc.CLONE_NEWNS, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
       "network": sc.CLONE_NEWNET, "cgroup": sc.CLONE_NEWCGROUP}
RLIMITS = {"RLIMIT_" + n: getattr(resource, "RLIMIT_" + n) for n in
            ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
             "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME") if hasattr(resource, "RLIMIT_" + n)}

TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


@dataclass
class Rootfs:
    """How to make the root: the snapshotter's mounts, performed on `target`."""
    target: str  # mount point (shared by the store's containers; each namespace sees its own)
    mounts: list[RootMount] = field(default_factory=list)
    base: str = ""  # the store root: overlay paths are given relative to it
    etc_dir: str = ""  # where a private tmpfs gets /etc/hosts, /etc/hostname, /etc/resolv.conf
    etc_files: dict[str, str] = field(default_factory=dict)  # file name -> text


@dataclass
class ChildSetup:
    """Everything the container's first process needs between fork and exec (decided before the fork)."""
    spec: dict
    rootfs: Rootfs
    cgroup_paths: list[str]
    cgroup_mounts: mounts.CgroupMounts | None
    copy_up: list[tuple[str, str]]  # (container path, empty named volume dir) to seed from the image
    stdio: tuple[int, int, int]
    err_w: int
    life_r: int
    console_sock: int | None  # -t: the pty master goes back to soko through this
    seccomp_filter: bytes | None = None  # compiled linux.seccomp (bpf.py), installed just before exec
    gated: bool = False  # wait for soko's go before becoming the container's process (wait_for_go)


GO = b"g"


def fail(err_w: int, status: int, message: str) -> None:
    try:
        os.write(err_w, f"{status} {message}".encode()[:4000])
    finally:
        os._exit(status)


def run(s: ChildSetup) -> None:
    """Never returns: execs the command or exits with a status."""
    try:
        _setup_and_exec(s)
    except StartError as e:
        fail(s.err_w, e.status, str(e))
    except ContainerError as e:
        fail(s.err_w, e.status, str(e))
    except OSError as e:
        fail(s.err_w, 125, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
        fail(s.err_w, 125, f"{type(e).__name__}: {e}")
    os._exit(125)


def _setup_and_exec(s: ChildSetup) -> None:
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _die_with_soko(s.life_r)
    spec = s.spec
    linux = spec.get("linux", {})
    cgroups.join_self(s.cgroup_paths)
    flags = 0
    for ns in linux.get("namespaces", []):
        if ns.get("path"):  # made by soko (a bridge network's): joined, not new
            fd = os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(fd, _NS.get(ns["type"], 0))
            os.close(fd)
            continue
        flags |= _NS.get(ns["type"], 0)
    sc.unshare(flags)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    root = s.rootfs.target
    mount_root(s.rootfs, s.err_w)
    for target, volume in s.copy_up:
        copy_up(root, target, volume)
    for m in spec.get("mounts", []):
        extra = sc.MS_NODEV if (m["destination"] == "/dev" and m.get("type") == "tmpfs") else 0
        mounts.mount_one(root, m, s.cgroup_mounts, extra)
        if m["destination"] == "/dev":
            mounts.populate_dev(root)
    process = spec["process"]
    stdio = s.stdio
    if process.get("terminal"):
        stdio = _console(root, s.console_sock, process["user"]["uid"])
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
    mounts.mask_paths(linux.get("maskedPaths", []), linux.get("readonlyPaths", []))
    cwd = process.get("cwd") or "/"
    try:
        # before the root goes read-only, as Docker does; symlinks resolve inside the root
        os.chdir(mkdir_in_root("/", cwd))
    except OSError as e:
        raise StartError(f"cannot use {cwd!r} as the working directory: {e.strerror}") from None
    if spec.get("root", {}).get("readonly"):
        sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NODEV)
    if flags & sc.CLONE_NEWUTS and spec.get("hostname"):
        sc.sethostname(spec["hostname"])
    if flags & sc.CLONE_NEWNET:
        _loopback_up()
    for rl in process.get("rlimits", []):
        if rl["type"] in RLIMITS:
            resource.setrlimit(RLIMITS[rl["type"]], (rl["soft"], rl["hard"]))
    if s.gated:
        wait_for_go(s.life_r)
    become(process)
    _die_with_soko(s.life_r)  # again: a change of user clears the parent-death signal
    os.close(s.life_r)
    for i, fd in enumerate(stdio):
        if fd != i:
            os.dup2(fd, i)
    os.closerange(3, s.err_w)
    os.closerange(s.err_w + 1, 1 << 16)
    if s.seccomp_filter:
        # last, as runc does with no_new_privs: nothing of soko's own setup is filtered
        sc.seccomp_filter(s.seccomp_filter)
    exec_command(process["args"], process.get("env", []), s.err_w)


def _die_with_soko(life_r: int) -> None:
    """SIGKILL when soko dies; exit now if it already has (its end of the life pipe is closed:
    readable, with nothing to read; soko's go, unread yet, is something to read)."""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if readable([life_r], 0) and not _unread(life_r):
        os._exit(137)  # soko died before we could notice: do not start an orphan


def _unread(fd: int) -> int:
    import termios

    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def wait_for_go(life_r: int) -> None:
    """Block until soko says go (a byte on the life pipe: the network's rules are in, say); the
    pipe's end means soko died: then go nowhere."""
    if os.read(life_r, 1) != GO:
        os._exit(137)


def mount_root(r: Rootfs, err_w: int) -> None:
    """Perform the snapshotter's mounts on `r.target` (see snapshotter.py)."""
    for m in r.mounts:
        if m.type == "overlay":
            _mount_overlay(m, r.target, r.base, err_w)
        else:
            sc.mount(m.source, r.target, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, r.target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_NODEV)
    if r.etc_dir:
        sc.mount("tmpfs", r.etc_dir, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=256k,mode=755")
        write_into(r.etc_dir, r.etc_files)


def _mount_overlay(m: RootMount, target: str, base: str, err_w: int) -> None:
    """Overlay options must fit in one page and may not contain ',' or ':', so the
    paths are given relative to the store root (the cwd for the mount); beyond one
    page, through fsconfig one option at a time. Optional options are dropped when
    the kernel refuses them; a failure tells soko to fall back to copying."""
    opts = dict(o.split("=", 1) for o in m.options)
    lowers = opts.pop("lowerdir").split(":")
    paths = lowers + [opts.pop("upperdir"), opts.pop("workdir")]
    if base and all(p.startswith(base.rstrip("/") + "/") for p in paths):
        os.chdir(base)
        paths = [os.path.relpath(p, base) for p in paths]
    rest = [f"{k}={v}" for k, v in opts.items()]
    text = f"lowerdir={':'.join(paths[:-2])},upperdir={paths[-2]},workdir={paths[-1]}"
    error: ContainerError | None = None
    for extra in (m.optional, []):
        try:
            if len(text) < 3900:
                sc.mount("overlay", target, "overlay", sc.MS_NODEV, ",".join([text] + rest + extra))
            else:  # too many layers for one page of options: one option at a time
                sc.mount_fs("overlay", target, [("lowerdir+", p) for p in paths[:-2]]
                            + [("upperdir", paths[-2]), ("workdir", paths[-1])]
                            + [tuple(e.split("=", 1)) for e in rest + extra if "=" in e],
                            [e for e in rest + extra if "=" not in e])
                sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_NODEV)
            return
        except ContainerError as e:
            error = e
    fail(err_w, OVERLAY_FAILED, f"overlay: {error}")


def copy_up(root: str, target: str, volume: str) -> None:
    """A new named volume starts with what the image has at its mount point (Docker)."""
    src = secure_join(root, target)
    try:
        st = os.lstat(src)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and not os.listdir(volume):
        copy_tree(src, volume)


def _console(root: str, sock: int | None, uid: int) -> tuple[int, int, int]:
    """A pty from the container's own devpts; the master goes to soko."""
    master = os.open(os.path.join(root, "dev/pts/ptmx"), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    os.fchown(slave, uid, -1)
    console = ensure_target(root, "/dev/console", False)
    fd = open_inside(root, console)
    try:
        sc.mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{fd}", None, sc.MS_BIND)
    finally:
        os.close(fd)
    if sock is not None:
        import socket

        socket.send_fds(socket.socket(fileno=sock), [b"pty"], [master])
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    return slave, slave, slave


def _loopback_up() -> None:
    fd = sc.socket(2, 2)  # AF_INET, SOCK_DGRAM: any socket will do for interface ioctls
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(fd, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        os.close(fd)


def become(process: dict) -> None:
    """User, groups, capabilities and no_new_privs, in the only order that works."""
    user = process.get("user", {})
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    capspec = process.get("capabilities", {})
    bounding = caps.mask([c for c in capspec.get("bounding", []) if c in caps.NUMBERS])
    effective = caps.mask([c for c in capspec.get("effective", []) if c in caps.NUMBERS])
    permitted = caps.mask([c for c in capspec.get("permitted", []) if c in caps.NUMBERS])
    inheritable = caps.mask([c for c in capspec.get("inheritable", []) if c in caps.NUMBERS])
    for cap in range(sc.last_cap() + 1):
        if not bounding & (1 << cap):
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setgroups([int(g) for g in user.get("additionalGids", [])])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.capset(effective, permitted, inheritable)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    if process.get("noNewPrivileges"):
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def exec_command(args: list[str], env_list: list[str], err_w: int) -> None:
    env: dict[str, str] = {}
    for e in env_list:
        k, _, v = e.partition("=")
        env[k] = v
    prog = args[0]
    try:
        if "/" in prog:
            os.execve(prog, args, env)
        os.execvpe(prog, args, env)
    except FileNotFoundError:
        if "/" in prog:
            fail(err_w, 127, f'exec: "{prog}": stat {prog}: no such file or directory')
        fail(err_w, 127, f'exec: "{prog}": executable file not found in $PATH')
    except PermissionError:
        fail(err_w, 126, f'exec: "{prog}": permission denied')
    except OSError as e:
        fail(err_w, 126, f'exec: "{prog}": {e.strerror}')
    sys.exit(125)
