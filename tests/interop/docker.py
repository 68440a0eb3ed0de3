"""A private Docker Engine (Debian's docker.io: dockerd 20.10 with BuildKit) for reference runs.

TESTING.md: never the machine's own daemon. Each session gets a dockerd with
its own data root, exec root and socket under a temp dir, no iptables and no
bridge (so builds and runs use `--network none` or `host`), stopped by its pid
file and removed afterwards. The client is Debian's /usr/bin/docker, the one
that matches the daemon (a newer client may be earlier on PATH).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .tools import need_tool

DOCKER_CLIENT = "/usr/bin/docker"


class DockerEngine:
    def __init__(self, base: Path):
        need_tool("dockerd")
        if not os.path.exists(DOCKER_CLIENT):
            if os.environ.get("CI"):
                pytest.fail("docker.io is not installed (make setup installs it)")
            pytest.skip("docker.io is not installed")
        self.base = base
        self.sock = base / "d.sock"
        self.pidfile = base / "d.pid"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_BUILDKIT": "1",
                    "DOCKER_CONFIG": str(base / "client-config")}
        self.env.pop("DOCKER_CONTEXT", None)
        self._log = open(base / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--data-root", str(base / "root"), "--exec-root", str(base / "exec"),
             "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if subprocess.run([DOCKER_CLIENT, "version"], env=self.env, capture_output=True).returncode == 0:
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"dockerd did not answer in 60 s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.base / "dockerd.log").read_text(errors="replace")[-2000:]

    def __call__(self, *args, input: bytes | None = None, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        """`docker ARGS...` against this daemon; raises with its output when it fails and check is set."""
        p = subprocess.run([DOCKER_CLIENT, *map(str, args)], env=self.env, input=input,
                           capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(map(str, args))} exited {p.returncode}:\n"
                                 f"{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
        return p

    def out(self, *args, **kw) -> str:
        return self(*args, **kw).stdout.decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        # containerd-shims and mounts under the exec/data roots go with the daemon
        subprocess.run(["umount", "-R", "-l", str(self.base / "exec")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(self.base / "root")], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine(busybox_rootfs):
    """A private dockerd for the whole session, with `busybox:local` imported from the fixture rootfs."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root")
        pytest.skip("dockerd needs root")
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="soko-dockerd-", dir="/var/tmp")))
    try:
        engine("import", busybox_rootfs, "busybox:local")
        yield engine
    finally:
        engine.stop()
