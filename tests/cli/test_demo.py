"""`make demo` (fixtures/demo.sh) runs in CI: it shows the main job end to end and leaves
nothing running, also when a step fails."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from tests.conftest import REPO, need_root

DEMO = REPO / "fixtures" / "demo.sh"


def run_demo(tmp_path, soko_cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOKO": soko_cmd, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", str(DEMO), str(tmp_path / "demo")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def registry_pid(out: str) -> int:
    return int(re.search(r"\(registry pid (\d+)\)", out).group(1))


def test_demo_builds_runs_pushes_pulls_and_stops_its_registry(tmp_path, busybox_rootfs):
    need_root()
    started = time.monotonic()
    p = run_demo(tmp_path, f"{sys.executable} -m soko")
    took = time.monotonic() - started
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    steps = re.findall(r"^\$ soko (\w+)", out, re.M)
    assert steps == ["import", "build", "images", "run", "serve", "tag", "push", "rmi", "images", "pull", "images",
                     "run"]
    assert out.count("hello from soko (pid 1, built ") == 2  # run before the push and after the pull
    assert re.search(r"^#\d+ \[\d/\d\] RUN ", out, re.M)
    assert re.search(r"^Deleted: sha256:[0-9a-f]{64}$", out, re.M)
    assert "Status: Downloaded newer image for localhost:" in out
    assert re.search(r"^localhost:\d+/demo/app\s+1\s+sha256:[0-9a-f]{64}\s", out, re.M)  # pulled, with its digest
    assert not alive(registry_pid(out))
    assert took < 60, took  # 30 s is the goal on a warm machine; CI shares it with other work


def test_demo_stops_its_registry_when_a_step_fails(tmp_path, busybox_rootfs):
    """A soko whose `pull` fails (as an unreachable registry would make it): the script stops at
    that step with its status, and the trap stops the registry it started."""
    need_root()
    wrapper = tmp_path / "soko-failing-pull"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = pull ] && {{ echo "soko: pull failed" >&2; exit 1; }}; '
                       f'done\nexec {sys.executable} -m soko "$@"\n')
    wrapper.chmod(0o755)
    p = run_demo(tmp_path, str(wrapper))
    assert p.returncode == 1
    assert "$ soko pull" in p.stdout and "soko: pull failed" in p.stderr
    assert "$ soko run --rm --network none localhost" not in p.stdout.split("$ soko pull")[1]
    assert not alive(registry_pid(p.stdout))
