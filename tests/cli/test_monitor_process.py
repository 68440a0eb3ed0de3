"""The process a detached container leaves behind: its monitor, forked from `soko run -d`
(no second interpreter), on its own, holding nothing of soko's; exec'd afresh when soko has
other threads (a fork would inherit their locks held)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

from .containers_helpers import assert_nothing_left, bb, marker, processes_mentioning, state, wait_until  # noqa: F401


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # from field 3 (state) on


def _monitor_of(soko, cid: str) -> int:
    with open(soko.root / "containers" / cid / "state.json") as f:
        return json.load(f)["owner"]


def _fds(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return out


def _run_d(argv: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, int]:
    """`argv` in a session of its own with its output on pipes, as `$(soko run -d ...)` in a shell
    runs it; then its session is killed, as a closed terminal would. (The result, the seconds
    until both pipes closed, the pipe inode of its stdout.)"""
    started = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    pipe = os.fstat(p.stdout.fileno()).st_ino
    out, err = p.communicate(timeout=60)  # EOF only once every holder of the write ends is gone
    took = time.monotonic() - started
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing of its group is left
    return subprocess.CompletedProcess(argv, p.returncode, out.decode(), err.decode()), took, pipe


def _on_its_own(pid: int) -> None:
    """In a session of its own which it does not lead (so it can never get a controlling terminal)."""
    sid = int(_stat(pid)[3])
    assert sid != pid and sid != os.getsid(0)


def test_monitor_is_forked_and_holds_nothing_of_soko(soko, bb):
    mark = marker()
    r, took, pipe = _run_d([*soko.argv(), "run", "-d", "--network", "none", bb, "sleep", mark], soko.env)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert took < 20  # not the container's life: `$(soko run -d ...)` returns
    assert state(soko, cid)["Running"] is True  # its session killed, the container lives on
    pid = _monitor_of(soko, cid)
    _on_its_own(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().rstrip(b"\0").decode()
    assert cmdline.startswith(f"runtime.monitor {cid}")  # forked: soko's command line renamed
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().strip() == "runtime.monitor"
    fds = _fds(pid)
    assert fds[0] == fds[1] == fds[2] == "/dev/null"
    assert f"pipe:[{pipe}]" not in fds.values()
    assert not [t for t in fds.values() if ".db" in t], fds  # soko's databases: closed before the fork
    assert not [t for t in fds.values() if t.startswith("socket:")], fds  # --network none: no port held
    soko("stop", "-t", "0", cid)
    soko("rm", cid)
    assert_nothing_left(soko, [cid], [f"sleep {mark}"])


def test_monitor_is_execd_when_soko_has_another_thread(soko, bb):
    """A soko with a second thread (a library's, say) cannot fork safely: the monitor is a fresh
    interpreter then, and works the same."""
    mark = marker()
    code = ("import sys, threading; threading.Thread(target=threading.Event().wait, daemon=True).start(); "
            "from soko.cli import main; main()")
    argv = [sys.executable, "-c", code, "--root", str(soko.root), "run", "-d", "--network", "none", bb,
            "sleep", mark]
    r, took, pipe = _run_d(argv, {**soko.env, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert took < 20
    pid = _monitor_of(soko, cid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    assert args[1:3] == [b"-S", b"-c"] and b"runtime.monitor" in args[3] and f"{soko.root}/containers/{cid}".encode() in args
    _on_its_own(pid)
    assert _fds(pid)[1] == "/dev/null" and f"pipe:[{pipe}]" not in _fds(pid).values()
    assert soko("exec", cid, "echo", "hi").stdout == "hi\n"
    soko("stop", "-t", "0", cid)
    assert state(soko, cid)["ExitCode"] == 137
    soko("rm", cid)
    assert_nothing_left(soko, [cid], [f"sleep {mark}"])
