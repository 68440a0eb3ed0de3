"""Running containers from a process with more than 1024 descriptors open (a test worker holding
snapshots, a server with many clients): every wait in runtime/ uses poll, as select refuses a
descriptor past 1024 ("filedescriptor out of range in select()")."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Each case in a process of its own: its first 1,100 descriptors are taken, so every pipe, pidfd
# and socket the runtime makes (its forked monitor's too) is numbered past 1024.
_SCRIPT = """
import json, os, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]

import runtime
from runtime.container import Container
from storage.images import ImageStore

root, case = sys.argv[1], sys.argv[2]
store = ImageStore(root)
out = bytearray()
report = {"first_free": os.dup(0)}
if case == "pipes":  # waiting.wait relays the container's output pipes; child.py checks soko lives
    opts = runtime.RunOptions(command=["sh", "-c", "echo out; echo err >&2; exit 3"], network="none")
    report["status"] = runtime.run(store, "busybox", opts, stdin=None, on_output=out.extend)
elif case in ("tty", "runc-tty"):  # tty.pump; runc sends the pty over a socket (executor_oci)
    opts = runtime.RunOptions(command=["sh", "-c", "tty >/dev/null && echo on-a-tty"], network="none", tty=True,
                              rm=True, runtime="runc" if case == "runc-tty" else "builtin")
    report["status"] = runtime.run(store, "busybox", opts, stdin=None, on_output=out.extend)
elif case in ("detached", "runc-detached-tty"):  # the forked monitor relays and waits (runc's pty comes
    ids = []                                        # to it over a socket); stop waits on a pidfd
    tty = case == "runc-detached-tty"
    opts = runtime.RunOptions(command=["sh", "-c", "trap 'exit 7' TERM; tty >/dev/null && echo on-a-tty; echo up; "
                                       "while :; do sleep 0.1; done"], network="none", detach=True, tty=tty,
                              runtime="runc" if tty else "builtin")
    runtime.run(store, "busybox", opts, on_event=lambda kind, msg: kind == "created" and ids.append(msg))
    c = Container.get(store, ids[0])
    deadline = time.monotonic() + 20
    while b"up" not in c.log_path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    c.stop(timeout=10)
    report["stop_took"] = time.monotonic() - started
    st = c.refresh()
    report["status"], report["running"] = st.exit_code, st.status
    out += c.log_path.read_bytes()
    c.delete()
elif case == "restart":  # the monitor's backoff between restarts
    ids = []
    opts = runtime.RunOptions(command=["sh", "-c", "echo try; exit 3"], network="none", detach=True,
                              restart="on-failure:2")
    runtime.run(store, "busybox", opts, on_event=lambda kind, msg: kind == "created" and ids.append(msg))
    c = Container.get(store, ids[0])
    c.cdir.wait_unlocked(30)  # its monitor is gone: no restart left
    st = c.refresh()
    report["status"], report["restarts"] = st.exit_code, st.restart_count
    out += c.log_path.read_bytes()
    c.delete(force=True)
report["out"] = out.decode(errors="replace")
print(json.dumps(report))
"""


def _run(store, case: str) -> dict:
    store.db.close()
    p = subprocess.run([sys.executable, "-c", _SCRIPT, str(store.root), case], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["first_free"] > 1024  # every descriptor the runtime made was past 1024
    return report


def test_a_container_with_output_pipes(store):
    r = _run(store, "pipes")
    assert r["status"] == 3 and sorted(r["out"].split()) == ["err", "out"]


@pytest.mark.parametrize("case", ["tty", "runc-tty"])
def test_a_container_on_a_terminal(store, case):
    r = _run(store, case)
    assert r["status"] == 0 and r["out"].strip() == "on-a-tty"


@pytest.mark.parametrize("case", ["detached", "runc-detached-tty"])
def test_a_detached_container_and_its_stop(store, case):
    r = _run(store, case)
    assert "up" in r["out"] and ("on-a-tty" in r["out"]) == (case == "runc-detached-tty") and r["running"] == "exited"
    assert r["status"] == 7 and r["stop_took"] < 5  # its SIGTERM trap ended it, seen at once on the pidfd


def test_a_detached_container_restarted_by_its_monitor(store):
    r = _run(store, "restart")
    assert r["restarts"] == 2 and r["status"] == 3 and r["out"].count("try") == 3
