"""--runtime runc|crun: the same spec, run as a bundle by an OCI runtime.

The bundle is the container's state directory (config.json + rootfs/). The
root filesystem is mounted by a small forked helper inside a mount
namespace of its own, which then execs `runc run`: the overlay mount lives
and dies with that namespace, so nothing is left mounted on the host, even
when soko is killed. In the foreground the helper execs `runc run` (runc
stays, relays signals and exits with the container's status); for a
detached container the monitor has it exec `runc run --detach`, which
returns once the container runs, and the container's first process becomes
the monitor's child (the monitor is a subreaper); with -t runc hands the
pty master over --console-socket. The helper has PDEATHSIG=SIGKILL, but the
container's own processes are not tied to soko or the monitor: a small
watcher process (see _watch) deletes the container (`runc delete --force`)
as soon as its owner dies, so a container never outlives it. The next
sweep removes what is left on disk.

runc writes its own errors to a JSON log, separate from the container's
stderr, so a failure to start maps onto Docker's 125/126/127.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import termios
from dataclasses import dataclass
from pathlib import Path

from . import child, syscalls as sc
from .errors import ContainerError, RuntimeNotAvailable, StartError
from .paths import mkdir_in_root
from .executor_builtin import OverlayUnavailable, exit_status
from .waiting import FORWARDED, kill_and_reap

STATE_ROOT = "/run/soko"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeNotAvailable(f"runtime {name!r} not found in PATH")
    return path


def state_root(name: str) -> str:
    return os.path.join(STATE_ROOT, name)


def _status_for(message: str) -> int:
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return 125


def _errors(log: Path) -> list[str]:
    out = []
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            if line.strip():
                out.append(line.strip())
            continue
        if isinstance(rec, dict) and rec.get("level") in ("error", "fatal"):
            out.append(str(rec.get("msg", "")))
    return out


@dataclass
class OciTask:
    """A container started through an OCI runtime.

    Foreground: `pid` is the `runc run` helper (runc forwards signals and exits
    with the container's status). Detached (the monitor): `runc run --detach`
    has returned and `pid` is the container's first process, the monitor's
    child since the monitor is a subreaper."""
    pid: int
    name: str
    log: Path
    err_r: int
    watcher: int
    done_w: int
    master: int | None = None
    detached: bool = False

    def exit_code(self, wait_status: int) -> int:
        if not self.detached:
            msg = os.read(self.err_r, 4096).decode(errors="replace")
            if msg:
                code, _, text = msg.partition(" ")
                if code == str(child.OVERLAY_FAILED):
                    raise OverlayUnavailable(text)
                raise StartError(text, int(code) if code.isdigit() else 125)
        code = exit_status(wait_status)
        if code != 0 and not self.detached:
            errs = _errors(self.log)
            if errs:
                raise StartError(f"{self.name}: {errs[-1]}", _status_for(errs[-1]))
        return code

    def close(self) -> None:
        if self.err_r >= 0:
            os.close(self.err_r)
            self.err_r = -1
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self.done_w >= 0:
            os.write(self.done_w, b"x")  # finished here: the watcher leaves the container alone
            os.close(self.done_w)
            self.done_w = -1
            try:
                os.waitpid(self.watcher, 0)
            except ChildProcessError:
                pass  # collected already (the monitor reaps all its children)


def start(name: str, bundle: Path, oci_id: str, spec: dict, rootfs: child.Rootfs,
          copy_up: list[tuple[str, str]], stdin: int | None, stdout: int, stderr: int,
          detached: bool = False, console_dir: str | None = None) -> OciTask:
    """Start the bundle with `runc run` (foreground) or `runc run --detach` (the monitor)."""
    exe = binary(name)
    (bundle / "config.json").write_text(json.dumps(spec))
    log = bundle / f"{name}.log"
    root = state_root(name)
    os.makedirs(root, mode=0o700, exist_ok=True)
    argv = [exe, "--root", root, "--log", str(log), "--log-format", "json", "run", "--bundle", str(bundle)]
    tty = bool(spec["process"].get("terminal"))
    pid_file = bundle / f"{name}.pid"
    listener = None
    if detached:
        argv += ["--detach", "--pid-file", str(pid_file)]
        if tty:
            import socket
            import tempfile

            sock_dir = tempfile.mkdtemp(prefix="soko-console-", dir=console_dir or STATE_ROOT)
            sock_path = os.path.join(sock_dir, "s")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(sock_path)
            listener.listen(1)
            argv += ["--console-socket", sock_path]
    argv.append(oci_id)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    to_close = [err_w]
    if stdin is None:
        stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        to_close.append(stdin)
    pty_master = None
    if tty and not detached:
        # runc relays a terminal only when its own stdio is one (with a
        # controlling tty): give it a pty and relay that one to soko's stdio.
        pty_master, pty_slave = os.openpty()
        stdin = stdout = stderr = pty_slave
        to_close.append(pty_slave)
    pid = 0
    watcher, done_w = _watch(exe, root, oci_id)
    task = OciTask(0, name, log, err_r, watcher, done_w, pty_master, detached)
    try:
        try:
            pid = os.fork()
            if pid == 0:
                _helper(argv, rootfs, copy_up, (stdin, stdout, stderr), err_w, tty and not detached,
                        spec["process"].get("cwd", ""), _netns_path(spec))
        finally:
            for fd in to_close:
                os.close(fd)
        task.pid = pid
        if detached:
            if listener is not None:
                task.master = _console_master(listener, pid)
            _, status = os.waitpid(pid, 0)
            msg = os.read(err_r, 4096).decode(errors="replace")
            if msg:
                code, _, text = msg.partition(" ")
                if code == str(child.OVERLAY_FAILED):
                    raise OverlayUnavailable(text)
                raise StartError(text, int(code) if code.isdigit() else 125)
            if exit_status(status) != 0:
                errs = _errors(log) or [f"{name} exited with status {exit_status(status)}"]
                raise StartError(f"{name}: {errs[-1]}", _status_for(errs[-1]))
            task.pid = int(pid_file.read_text().strip())
        return task
    except BaseException:
        if pid and not detached:
            kill_and_reap(pid)
        task.close()
        raise
    finally:
        if listener is not None:
            path = listener.getsockname()
            listener.close()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _netns_path(spec: dict) -> str:
    return next((ns.get("path", "") for ns in spec.get("linux", {}).get("namespaces", [])
                 if ns.get("type") == "network"), "")


def _console_master(listener, helper: int) -> int | None:
    """The pty master runc sends over --console-socket (None if runc ended without sending it)."""
    import socket

    from .waiting import readable

    pidfd = os.pidfd_open(helper)
    try:
        while True:
            ready = readable([listener, pidfd])
            if listener in ready:
                conn, _ = listener.accept()
                with conn:
                    _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
                return fds[0] if fds else None
            if pidfd in ready:
                return None
    finally:
        os.close(pidfd)


def _watch(exe: str, root: str, oci_id: str) -> tuple[int, int]:
    """Fork the watcher: it blocks on a pipe only soko writes to. A byte means soko finished
    the run itself; end-of-file means soko died, and the watcher deletes the container.
    Returns (watcher pid, soko's end of the pipe)."""
    import subprocess  # before the fork: the child imports nothing
    import time

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        os.close(r)
        return pid, w
    try:
        for sig in FORWARDED + [signal.SIGPIPE]:  # a terminal's ^C is soko's to handle, not ours
            signal.signal(sig, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, r)  # the container directory's lock among them: a sweep must see soko gone
        os.closerange(r + 1, 1 << 16)
        if os.read(r, 1):
            os._exit(0)
        for delay in (0, 0.5, 1.0):  # again, in case runc was killed mid-create
            time.sleep(delay)
            subprocess.run([exe, "--root", root, "delete", "--force", oci_id])
    finally:
        os._exit(0)


def _helper(argv: list[str], rootfs: child.Rootfs, copy_up: list[tuple[str, str]],
            stdio: tuple[int, int, int], err_w: int, tty: bool = False, cwd: str = "",
            netns_path: str = "") -> None:
    """Forked: private mount namespace, root mounted, then exec the runtime."""
    try:
        for sig in FORWARDED + [signal.SIGPIPE, signal.SIGXFSZ]:  # back to defaults for the runtime
            signal.signal(sig, signal.SIG_DFL)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        if netns_path:
            from .network.netns import forget_others

            forget_others(netns_path)  # a foreground runc keeps this copy of the host's mounts
        child.mount_root(rootfs, err_w)
        for target, volume in copy_up:
            child.copy_up(rootfs.target, target, volume)
        if cwd:
            # Docker makes the workdir itself (runc cannot through an in-image symlink)
            mkdir_in_root(rootfs.target, cwd)
        os.chdir("/")
        if tty:
            os.setsid()
            fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
        for i, fd in enumerate(stdio):
            if fd != i:
                os.dup2(fd, i)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 16)
        os.execv(argv[0], argv)
    except ContainerError as e:
        child.fail(err_w, e.status, str(e))
    except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
        child.fail(err_w, 125, f"{argv[0]}: {e}")
    os._exit(125)


def delete(name: str, oci_id: str) -> None:
    """Forget a runtime container that is gone or must go (idempotent)."""
    import subprocess

    exe = shutil.which(name)
    if exe is None:
        return
    subprocess.run([exe, "--root", state_root(name), "delete", "--force", oci_id], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
