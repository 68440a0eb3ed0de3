"""`exec`: another process in a running container, confined as its first one is.

soko forks a helper that joins the container's cgroups and namespaces
(nsenter.py); since joining a PID namespace applies to children only, the
helper forks the process itself, which then resolves the user in the
container's own /etc/passwd, takes the container's capabilities, rlimits
and no_new_privs, its seccomp filter last, and execs. The helper waits for
it and exits with its status (with -d it exits at once and the process is
adopted by the container's PID 1, as with `runc exec -d`). Health checks
run through the same path. With -t the process gets a pty from the
container's own devpts; the master comes back to soko over a socket.
"""
from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
from dataclasses import dataclass, field

from . import child, nsenter, syscalls as sc, users
from .errors import ContainerError, ExecError
from .waiting import read_all

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


@dataclass
class ExecSpec:
    args: list[str]
    env: list[str]  # the whole environment
    cwd: str
    user: str | None = None  # -u text; None: the container's own user (`process_user`)
    process_user: dict = field(default_factory=dict)  # the container spec's process.user
    terminal: bool = False
    capabilities: dict = field(default_factory=dict)
    no_new_privileges: bool = True
    rlimits: list[dict] = field(default_factory=list)
    seccomp_filter: bytes | None = None
    new_session: bool = False  # its own session and process group (a health probe, killed whole)


@dataclass
class ExecTask:
    helper: int  # our child: exits with the process's status
    pid: int  # the process itself (host pid), to signal
    master: int | None = None


def spec_for(container_spec: dict, args: list[str], env: list[str] | None = None, user: str | None = None,
             cwd: str | None = None, tty: bool = False, seccomp_filter: bytes | None = None) -> ExecSpec:
    """An exec of `args` with the container's confinement; -e entries override its environment."""
    p = container_spec["process"]
    merged = list(p.get("env", []))
    for e in env or []:
        key = e.split("=", 1)[0]
        merged = [x for x in merged if x.split("=", 1)[0] != key] + [e]
    if tty and not any(x.startswith("TERM=") for x in merged):
        merged.append("TERM=xterm")  # as Docker's exec -t
    return ExecSpec(list(args), merged, cwd or p.get("cwd") or "/", user, dict(p.get("user", {})), tty,
                    dict(p.get("capabilities", {})), bool(p.get("noNewPrivileges", True)),
                    list(p.get("rlimits", [])), seccomp_filter)


def start(init_pid: int, ex: ExecSpec, stdin: int | None, stdout: int, stderr: int,
          detach: bool = False) -> ExecTask:
    """Start `ex` in the container whose first process is `init_pid`.

    Raises ExecError (126, as Docker's exec reports a process that cannot start)."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    to_close = [err_w, info_w]
    sock_parent = sock_child = None
    if stdin is None:
        stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        to_close.append(stdin)
    if ex.terminal:
        import socket

        sock_parent, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        to_close.append(sock_child.detach())
        sock_child = to_close[-1]
    try:
        fds = nsenter.namespaces(init_pid)
        paths = nsenter.cgroup_paths(init_pid)
    except OSError:
        for fd in to_close + [err_r, info_r]:
            os.close(fd)
        raise ExecError(f"container process {init_pid} is gone", 1) from None
    helper = os.fork()
    if helper == 0:
        try:
            os.close(err_r)
            os.close(info_r)
            if paths:
                from . import cgroups

                cgroups.join_self(paths)
            for flag, fd in fds:
                sc.setns(fd, flag)
            pid = os.fork()
            if pid == 0:
                _process(ex, (stdin, stdout, stderr), err_w, sock_child)
            os.write(info_w, str(pid).encode())
            os.close(info_w)
            os.close(err_w)
            if detach:
                os._exit(0)
            status = os.waitpid(pid, 0)[1]
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status))
        except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
            child.fail(err_w, 126, str(e))
        os._exit(126)
    for _flag, fd in fds:
        os.close(fd)
    for fd in to_close:
        os.close(fd)
    try:
        info = read_all(info_r)
        msg = read_all(err_r)
        if msg:
            os.waitpid(helper, 0)
            _code, _, text = msg.decode(errors="replace").partition(" ")
            raise ExecError(f"exec failed: {text}", 126)
        master = None
        if ex.terminal and sock_parent is not None:
            import socket

            _msg, got, _f, _a = socket.recv_fds(sock_parent, 16, 1)
            master = got[0] if got else None
        return ExecTask(helper, int(info or b"0"), master)
    finally:
        os.close(err_r)
        os.close(info_r)
        if sock_parent is not None:
            sock_parent.close()


def _process(ex: ExecSpec, stdio: tuple[int, int, int], err_w: int, sock: int | None) -> None:
    """The exec'd process, in the container's namespaces (its root is the container's)."""
    try:
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        process = {"user": dict(ex.process_user), "capabilities": ex.capabilities,
                   "noNewPrivileges": ex.no_new_privileges}
        if ex.user is not None:
            u = users.resolve(ex.user, _read_file)
            process["user"] = {"uid": u.uid, "gid": u.gid, "additionalGids": list(u.additional_gids)}
            if not any(e.startswith("HOME=") for e in ex.env):
                ex.env.append(f"HOME={u.home}")
        if ex.terminal:
            stdio = _pty(sock, int(process["user"].get("uid", 0)))
        elif ex.new_session:
            os.setsid()
        try:
            os.chdir(ex.cwd)
        except OSError as e:
            raise ExecError(f"chdir to cwd ({ex.cwd!r}) set in config.json failed: {e.strerror}") from None
        import resource

        for rl in ex.rlimits:
            if rl["type"] in child.RLIMITS:
                resource.setrlimit(child.RLIMITS[rl["type"]], (rl["soft"], rl["hard"]))
        child.become(process)
        for i, fd in enumerate(stdio):
            if fd != i:
                os.dup2(fd, i)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 16)
        if ex.seccomp_filter:
            sc.seccomp_filter(ex.seccomp_filter)
        child.exec_command(ex.args, ex.env, err_w)
    except ContainerError as e:
        child.fail(err_w, 126, str(e))
    except OSError as e:
        child.fail(err_w, 126, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
        child.fail(err_w, 126, f"{type(e).__name__}: {e}")
    os._exit(126)


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(16 << 20)
    except OSError:
        return None


def _pty(sock: int | None, uid: int) -> tuple[int, int, int]:
    """A pty from the container's devpts (we are in its mount namespace); the master goes to soko."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    os.fchown(slave, uid, -1)
    if sock is not None:
        import socket

        socket.send_fds(socket.socket(fileno=sock), [b"pty"], [master])
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    return slave, slave, slave
