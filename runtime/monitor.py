"""The monitor: one process per detached container, in the manner of conmon or a containerd shim.

Started by monitor_spawn.py, it outlives the soko that started it. It holds
the container directory's lock for as long as it lives (containers.py: a
monitor killed with -9 lets go of it, and the next soko command records the
container as killed with it), owns the container's stdio (pipes, or the pty
master with -t; stdin from its attach socket with -i) and writes everything
to the json-file log. It is the parent of the container's first process (a
subreaper, so runc's detached containers become its children too), waits
for it, records its exit code and time, runs the health check, and applies
the restart policy while the host is up. A stop request file (written by
`soko stop`, `kill`, `rm -f`) means: no restart. SIGTERM to the monitor
stops the container as `soko stop` would.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from . import containers, launch as launchmod, syscalls as sc
from .containers import STOP_FILE, ContainerDir, State
from .errors import ContainerError
from .launch import Launch
from .logfile import LogWriter
from .service import BACKOFF_MAX, BACKOFF_RESET_AFTER, BACKOFF_START, RestartPolicy, probe
from .waiting import readable

ATTACH = "attach"  # the socket `start -i` / `run -i` write the container's stdin to


class Monitor:
    def __init__(self, directory: Path, lock_fd: int, report_fd: int):
        self.cdir = ContainerDir(directory, State.load(directory / "state.json"), lock_fd)
        self.launch = Launch.load(directory)
        svc = self.launch.service
        self.policy = RestartPolicy.from_json(svc.get("restart"))
        self.probe = probe(svc.get("healthcheck"))
        self.stop_signal = int(svc.get("stop_signal") or signal.SIGTERM)
        self.stop_timeout = float((svc.get("stop_timeout") or 10))
        self.report_fd = report_fd
        self.log = LogWriter(directory / f"{self.cdir.id}-json.log")
        self.tty = bool(self.launch.spec["process"].get("terminal"))
        self.listener = _listen(directory) if svc.get("open_stdin") else None
        self.clients: list = []
        self.stdin_w: int | None = None  # the container's stdin (a pipe, or the pty master with -t)
        self.term_at: float | None = None  # SIGTERM received: SIGKILL the container at this time
        self.reaped: dict[int, int] = {}  # pid -> wait status, of children reap() collected
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- state ----------------------------------------------------------------------------------
    @property
    def st(self) -> State:
        return self.cdir.state

    def save(self) -> None:
        self.cdir.save()

    def report(self, text: str) -> None:
        if self.report_fd >= 0:
            try:
                os.write(self.report_fd, text.encode()[:60000])
            finally:
                os.close(self.report_fd)
                self.report_fd = -1

    def stop_requested(self) -> bool:
        return (self.cdir.dir / STOP_FILE).exists()

    # -- the life ---------------------------------------------------------------------------------
    def run(self) -> None:
        st = self.st
        st.owner, st.monitor = os.getpid(), True
        delay = BACKOFF_START
        first = True
        while True:
            began = time.monotonic()
            code = self.run_once(first)
            first = False
            if code is None:
                break
            stop = self.stop_requested() or self.term_at is not None
            st.stop_requested = stop
            if not self.policy.should_restart(code, st.restart_count, stop):
                break
            if time.monotonic() - began >= BACKOFF_RESET_AFTER:
                delay = BACKOFF_START
            st.status = containers.RESTARTING
            st.restart_count += 1
            self.save()
            if self._sleep(delay):
                st.status = containers.EXITED
                st.stop_requested = True
                break
            delay = min(delay * 2, BACKOFF_MAX)
        self.save()
        self.log.close()
        if st.rm:
            self._remove()

    def _sleep(self, seconds: float) -> bool:
        """Sleep, unless a stop is requested meanwhile (True then)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_requested() or self.term_at is not None:
                return True
            readable([self.wake_r], min(0.05, max(0.0, deadline - time.monotonic())))
        return self.stop_requested()

    def run_once(self, first: bool) -> int | None:
        """One start of the container and its life; its exit code, None when it could not start."""
        st = self.st
        outs: list[tuple[int, str]] = []
        writers: list[int] = []
        stdout = stderr = 1
        if not self.tty:
            r, stdout = os.pipe2(os.O_CLOEXEC)
            outs.append((r, "stdout"))
            r, stderr = os.pipe2(os.O_CLOEXEC)
            outs.append((r, "stderr"))
            writers = [stdout, stderr]
        stdin = None
        if self.listener is not None and not self.tty:
            stdin, self.stdin_w = os.pipe2(os.O_CLOEXEC)
            writers.append(stdin)
        try:
            task = launchmod.start(self.launch, self.cdir.dir, stdin, stdout, stderr, detached=True)
        except ContainerError as e:
            for r, _ in outs:
                os.close(r)
            if self.stdin_w is not None:
                os.close(self.stdin_w)
                self.stdin_w = None
            st.error, st.exit_code, st.pid = str(e), e.status, 0
            if first:
                st.status = containers.CREATED
                self.report(f"error {e.status} {e}")
            else:
                st.status, st.finished_at = containers.EXITED, containers.now_ns()
            self._release()
            return None
        finally:
            for fd in writers:
                os.close(fd)
        if task.master is not None:
            _winsize(task.master)
            outs.append((task.master, "stdout"))
            if self.listener is not None:
                self.stdin_w = task.master
        st.status, st.pid, st.started_at, st.error = containers.RUNNING, task.pid, containers.now_ns(), ""
        if self.probe is not None:
            st.health = {"Status": "starting", "FailingStreak": 0, "Log": (st.health or {}).get("Log", [])}
        self.save()
        if first:
            self.report(f"ok {task.pid}")
        try:
            status = self._watch(task, outs)
            code = task.exit_code(status)
        except ContainerError as e:
            code = e.status
            st.error = str(e)
        finally:
            for r, _ in outs:
                if r != task.master:
                    os.close(r)
            if self.stdin_w is not None and self.stdin_w != task.master:
                os.close(self.stdin_w)
            self.stdin_w = None
            task.close()
        self.log.flush()
        st.status, st.exit_code, st.pid, st.finished_at = containers.EXITED, code, 0, containers.now_ns()
        self._release()
        self.save()
        return code

    def _release(self) -> None:
        try:
            containers.release_resources(self.cdir.dir, self.st)
        except ContainerError as e:
            self.st.error = self.st.error or str(e)

    def _watch(self, task, outs: list[tuple[int, str]]) -> int:
        """Relay output to the log, run health checks, until the container's process ends."""
        pidfd = os.pidfd_open(task.pid)
        streams = dict(outs)
        started = time.monotonic()
        check = None
        if self.probe is not None:
            from .health import Check

            check = Check(self, task.pid)
        next_check = started + self.probe.interval if self.probe else None
        try:
            while True:
                watch = [pidfd, self.wake_r] + list(streams) + self.clients
                if self.listener is not None:
                    watch.append(self.listener)
                timeout = None
                if check is not None:
                    watch += check.fds()
                    due = check.deadline() if check.running else next_check
                    timeout = max(0.0, due - time.monotonic())
                if self.term_at is not None:
                    timeout = max(0.0, min(timeout if timeout is not None else 1e9, self.term_at - time.monotonic()))
                ready = readable(watch, timeout)
                if self.wake_r in ready:
                    _drain(self.wake_r)
                self.reap()
                for fd in ready:
                    if fd in streams:
                        try:
                            data = os.read(fd, 65536)
                        except OSError:
                            data = b""
                        if data:
                            self.log.write(streams[fd], data)
                        else:
                            del streams[fd]
                    elif fd is self.listener:
                        try:
                            self.clients.append(self.listener.accept()[0])
                        except OSError:
                            pass
                    elif fd in self.clients:
                        self._from_client(fd)
                if self.term_at is not None and time.monotonic() >= self.term_at:
                    _kill(pidfd, signal.SIGKILL)
                    self.term_at = float("inf")
                if check is not None:
                    now = time.monotonic()
                    if check.running:
                        if check.poll(ready, now):
                            next_check = time.monotonic() + self.probe.interval
                    elif now >= next_check:
                        check.start(started)
                if pidfd in ready:
                    for fd in list(streams):  # what is left in the pipes
                        drain_into(fd, lambda d, s=streams[fd]: self.log.write(s, d))
                    if check is not None and check.running:
                        check.abandon()
                    return self.wait_for(task.pid)
        finally:
            os.close(pidfd)

    def reap(self) -> None:
        """Collect every child that ended (SIGCHLD wakes the loop). A subreaper inherits the
        orphans of killed health probes, which are in the container's PID namespace: left as
        zombies, they would keep its first process from ever finishing its exit."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    def wait_for(self, pid: int) -> int:
        """The wait status of child `pid`, whether reap() collected it already or not."""
        if pid in self.reaped:
            return self.reaped.pop(pid)
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return self.reaped.pop(pid, 0)

    def _from_client(self, client) -> None:
        """Attached stdin into the container's; the client's end closes the container's stdin
        (a ^D on a terminal), as `docker run -i` does when its input ends."""
        try:
            data = client.recv(65536)
        except OSError:
            data = b""
        if data:
            if self.stdin_w is not None:
                try:
                    os.write(self.stdin_w, data)
                except OSError:
                    pass
            return
        self.clients.remove(client)
        client.close()
        if self.stdin_w is None:
            return
        if self.tty:
            try:
                os.write(self.stdin_w, b"\x04")
            except OSError:
                pass
        else:
            os.close(self.stdin_w)
            self.stdin_w = None

    def on_term(self, _signum, _frame) -> None:
        """SIGTERM: stop the container (its stop signal, SIGKILL after its stop timeout)."""
        (self.cdir.dir / STOP_FILE).touch()
        if self.term_at is None:
            self.term_at = time.monotonic() + self.stop_timeout
            pid = self.st.pid
            if pid:
                try:
                    fd = os.pidfd_open(pid)
                    _kill(fd, self.stop_signal)
                    os.close(fd)
                except OSError:
                    pass

    def _remove(self) -> None:
        """`run -d --rm`: the container goes when it ends, record included."""
        containers.remove_dir(self.cdir.dir)
        from storage.metadata import MetadataDB

        from . import records

        records.delete(MetadataDB(Path(self.launch.base) / "metadata.db"), self.cdir.id)


def _kill(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


def drain_into(fd: int, sink) -> None:
    """Whatever the pipe holds now, without blocking (a child of the container may keep it open)."""
    import fcntl

    if fd < 0:
        return
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        sink(data)


def attach_path(directory: Path) -> tuple[str, int]:
    """The attach socket's path through /proc/self/fd (a container directory's own path can be
    longer than a socket address allows), and the directory descriptor to close afterwards."""
    dfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dfd}/{ATTACH}", dfd


def _listen(directory: Path):
    import socket

    path, dfd = attach_path(directory)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.bind(path)
        os.chmod(path, 0o600)
        s.listen(8)
        return s
    finally:
        os.close(dfd)


def _winsize(master: int) -> None:
    import fcntl
    import struct
    import termios

    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    except OSError:
        pass


def main(argv: list[str]) -> None:
    """The monitor as a fresh interpreter runs it (monitor_spawn.BOOT): DIR LOCK_FD REPORT_FD."""
    sys.exit(serve(Path(argv[0]), int(argv[1]), int(argv[2])))


def serve(directory: Path, lock_fd: int, report_fd: int) -> int:
    """Own the container in `directory` (locked on `lock_fd`) until it is over for good; report
    on `report_fd` whether it started. The process's exit status."""
    os.set_inheritable(lock_fd, False)
    os.set_inheritable(report_fd, False)
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    m = None
    try:
        m = Monitor(directory, lock_fd, report_fd)
        signal.set_wakeup_fd(m.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, m.on_term)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the wakeup fd
        m.run()
    except BaseException as e:  # noqa: BLE001 - the monitor reports, records and goes
        text = f"{type(e).__name__}: {e}"
        try:
            if m is None:
                os.write(report_fd, f"error 125 monitor: {text}".encode())
            else:
                m.report(f"error 125 monitor: {text}")  # nothing once it reported (closed, maybe reused)
        except OSError:
            pass
        if m is not None:
            m.st.error = f"monitor: {text}"
            m.st.status = containers.EXITED if m.st.status in containers.LIVE else m.st.status
            m.st.pid = 0
            try:
                m._release()
                m.save()
            except BaseException:  # noqa: BLE001
                pass
        return 1
    return 0
