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

import pytest

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


# A `soko run -d` inside a program that holds a metadata database of its own (through soko's
# command, or the runtime's API as a program embedding it calls it): its connection is closed
# before the monitor's fork and reopened when next used; no database file is open at the fork.
_CALLER = """
import json, os, sys
from storage.metadata import MetadataDB

mine = MetadataDB(sys.argv[2])
mine.execute("CREATE TABLE IF NOT EXISTS notes (n INTEGER)")
mine.execute("INSERT INTO notes VALUES (1)")
open_at_fork = []

def databases_open():
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith((".db", ".db-wal", ".db-shm")):
            open_at_fork.append(target)

os.register_at_fork(before=databases_open)
if sys.argv[1] == "cli":
    from soko.entry import _plain
    try:
        _plain(sys.argv[3:])()  # what `soko ARGS` runs, without soko's way of leaving at its end
    except SystemExit as e:
        assert e.code == 0, e.code
else:
    import runtime
    from storage.images import ImageStore
    root, image, *command = sys.argv[sys.argv.index("--root") + 1:]
    image, command = command[command.index("--network") + 2], command[command.index("--network") + 3:]
    opts = runtime.RunOptions(command=command, network="none", detach=True)
    runtime.run(ImageStore(root), image, opts, on_event=lambda kind, msg: kind == "created" and print(msg))
os.register_at_fork(before=lambda: None)
mine.execute("INSERT INTO notes VALUES (2)")
print(json.dumps({"open_at_fork": open_at_fork, "notes": [r[0] for r in mine.query("SELECT n FROM notes ORDER BY n")]}),
      file=sys.stderr)
"""


@pytest.mark.parametrize("way", ["cli", "api"])
def test_a_callers_database_works_after_run_d_and_none_crosses_the_fork(soko, bb, tmp_path, way):
    mark = marker()
    argv = [sys.executable, "-c", _CALLER, way, str(tmp_path / "mine.db"), "--root", str(soko.root), "run", "-d",
            "--network", "none", bb, "sleep", mark]
    r, _, _ = _run_d(argv, {**soko.env, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert state(soko, cid)["Running"] is True
    pid = _monitor_of(soko, cid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().startswith(f"runtime.monitor {cid}".encode())  # forked, not exec'd
    report = json.loads(r.stderr.strip().splitlines()[-1])
    assert report["notes"] == [1, 2], report  # the caller's own database still works
    assert report["open_at_fork"] == [], report  # not one database open as the monitor was forked
    soko("rm", "-f", cid)
    assert_nothing_left(soko, [cid], [f"sleep {mark}"])
