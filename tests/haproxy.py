"""HAProxy (Debian's package) in front of several HTTP servers on loopback: the
load balancer of the replicated registry's tests and benchmark.

It listens on a port the kernel chose: this process binds 127.0.0.1:0 and
hands the listening socket to haproxy (`bind fd@N`), so no port is guessed.
Requests go round-robin, one by one (keep-alive connections too), and every
response says which server answered (`X-Soko-Replica: r0`...). A request that
cannot connect (a replica killed with -9) is retried on another server; a
down server is noticed by health checks every 200 ms. Browsers, which keep
cookies, stick to the server that first answered them (`sticky`: the web UI's
sign-in sessions live in one process's memory, registry/REPLICAS.md).
Registry clients keep no cookies, so their requests stay round-robin.

Config, log and the admin socket live in a temp dir; the PID is kept and
only that process is stopped.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPLICA_HEADER = "X-Soko-Replica"
STICKY_COOKIE = "soko_replica"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (make setup installs the haproxy package)")
        pytest.skip("haproxy is not installed (package haproxy)")
    return found


def config(fd: int, servers: list[tuple[str, int]], admin: Path, sticky: bool) -> str:
    cookie = f"    cookie {STICKY_COOKIE} insert indirect nocache httponly\n" if sticky else ""
    lines = [
        "global",
        f"    stats socket {admin} mode 600 level admin",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        "    timeout connect 5s",
        "    timeout client 600s",
        "    timeout server 600s",
        "    timeout http-request 60s",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure",
        "frontend registry",
        f"    bind fd@{fd}",
        "    default_backend replicas",
        "backend replicas",
        "    balance roundrobin",
        f"    http-response set-header {REPLICA_HEADER} %s",
        cookie.rstrip("\n"),
        *(f"    server r{i} {host}:{port} check inter 200ms fall 1 rise 1" + (f" cookie r{i}" if sticky else "")
          for i, (host, port) in enumerate(servers)),
    ]
    return "\n".join(line for line in lines if line) + "\n"


class HAProxy:
    """One haproxy process; `port` is where clients connect."""

    def __init__(self, servers: list[tuple[str, int]], sticky: bool = True, workdir: Path | None = None):
        self.servers = servers
        self.sticky = sticky
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="soko-haproxy-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._own_dir = workdir is None
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def admin(self) -> Path:
        return self.dir / "admin.sock"

    @property
    def log(self) -> Path:
        return self.dir / "haproxy.log"

    def start(self) -> "HAProxy":
        binary = haproxy_binary()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        try:
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(config(sock.fileno(), self.servers, self.admin, self.sticky))
            check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True,
                                   pass_fds=(sock.fileno(),))
            if check.returncode != 0:
                raise RuntimeError(f"haproxy refuses its config: {check.stdout}{check.stderr}")
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, pass_fds=(sock.fileno(),))
        finally:
            sock.close()  # haproxy holds its own copy
        self.wait_up()
        return self

    def command(self, cmd: str) -> str:
        """One command on the admin socket (`show stat`, `disable server replicas/r0`...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.admin))
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def states(self) -> dict[str, str]:
        """server name -> UP / DOWN / ... as the health checks see it."""
        out = {}
        rows = self.command("show stat").splitlines()
        if not rows:
            return out
        head = rows[0].lstrip("# ").split(",")
        for row in rows[1:]:
            cols = dict(zip(head, row.split(",")))
            if cols.get("pxname") == "replicas" and cols.get("svname", "").startswith("r"):
                out[cols["svname"]] = cols.get("status", "")
        return out

    def wait_up(self, names: list[str] | None = None, timeout: float = 30) -> None:
        """Until the servers (default: all) pass their health checks."""
        want = names or [f"r{i}" for i in range(len(self.servers))]
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                last = self.states()
            except OSError:
                last = {}
            if all(last.get(n, "").startswith("UP") for n in want):
                return
            time.sleep(0.05)
        raise RuntimeError(f"haproxy: servers not up after {timeout}s: {last}\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
