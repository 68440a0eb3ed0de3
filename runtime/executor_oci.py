"""--runtime runc|crun: the same spec, run as a bundle by an OCI runtime.

The bundle is the container's state directory (config.json + rootfs/). The
root filesystem is mounted by a small forked helper inside a mount
namespace of its own, which then execs `runc run`: the overlay mount lives
and dies with that namespace, so nothing is left mounted on the host, even
when soko is killed. The helper has PDEATHSIG=SIGKILL, but the container's
own processes are runc's children, not tied to soko: a small watcher process
(see _watch) deletes the container (`runc delete --force`) as soon as soko
dies, so a foreground container never outlives it. The next run's sweep
removes what is left on disk.

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
from pathlib import Path
from typing import Callable

from . import child, syscalls as sc
from .errors import ContainerError, RuntimeNotAvailable, StartError
from .paths import mkdir_in_root
from .executor_builtin import IO, OverlayUnavailable, exit_status
from .waiting import FORWARDED, Forwarder, kill_and_reap, wait
from .tty import Terminal

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


def run(name: str, bundle: Path, oci_id: str, spec: dict, rootfs: child.Rootfs,
        copy_up: list[tuple[str, str]], io: IO, on_started: Callable[[int], None] | None = None) -> int:
    exe = binary(name)
    (bundle / "config.json").write_text(json.dumps(spec))
    log = bundle / f"{name}.log"
    root = state_root(name)
    os.makedirs(root, mode=0o700, exist_ok=True)
    argv = [exe, "--root", root, "--log", str(log), "--log-format", "json", "run", "--bundle", str(bundle)]
    tty = bool(spec["process"].get("terminal"))
    pty_master = None
    argv.append(oci_id)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    devnull = None
    stdin = io.stdin
    if stdin is None:
        devnull = stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    stdout, stderr = io.stdout, io.stderr
    out_r = None
    if tty:
        # runc relays a terminal only when its own stdio is one (with a
        # controlling tty): give it a pty and relay that one to soko's stdio.
        pty_master, pty_slave = os.openpty()
        stdin = stdout = stderr = pty_slave
    elif io.on_output is not None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        stdout = stderr = out_w
    pid = 0
    watcher, done_w = _watch(exe, root, oci_id)
    with Forwarder() as fwd:
        try:
            pid = os.fork()
            if pid == 0:
                _helper(argv, rootfs, copy_up, (stdin, stdout, stderr), err_w, tty,
                        spec["process"].get("cwd", ""))
            os.close(err_w)
            if devnull is not None:
                os.close(devnull)
            if out_r is not None:
                os.close(out_w)
            if pty_master is not None:
                os.close(pty_slave)
            fwd.started(pid)
            if on_started:
                on_started(pid)
            if pty_master is not None:
                with Terminal(pty_master, io.stdin, io.stdout if io.on_output is None else None,
                              io.on_output, pid) as term:
                    pty_master = None  # the Terminal closes it
                    status = term.pump(fwd)
            else:
                status = wait(pid, fwd, out_r, io.on_output)
            msg = os.read(err_r, 4096).decode(errors="replace")
            if msg:
                code, _, text = msg.partition(" ")
                if code == str(child.OVERLAY_FAILED):
                    raise OverlayUnavailable(text)
                raise StartError(text, int(code) if code.isdigit() else 125)
            code = exit_status(status)
            if code != 0:
                errs = _errors(log)
                if errs:
                    raise StartError(f"{name}: {errs[-1]}", _status_for(errs[-1]))
            return code
        except BaseException:
            if pid:
                kill_and_reap(pid)
            raise
        finally:
            os.close(err_r)
            if out_r is not None:
                os.close(out_r)
            if pty_master is not None:
                os.close(pty_master)
            os.write(done_w, b"x")  # finished here: the watcher leaves the container alone
            os.close(done_w)
            os.waitpid(watcher, 0)


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
            stdio: tuple[int, int, int], err_w: int, tty: bool = False, cwd: str = "") -> None:
    """Forked: private mount namespace, root mounted, then exec the runtime."""
    try:
        for sig in FORWARDED + [signal.SIGPIPE, signal.SIGXFSZ]:  # back to defaults for the runtime
            signal.signal(sig, signal.SIG_DFL)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
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
