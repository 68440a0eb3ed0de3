"""Containers as services through the real `soko` command, as a user drives them:
run -d, a real HTTP request, logs, exec, stop, rm; both executors."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO

from .containers_helpers import assert_nothing_left, bb, free_port, inspect, marker, processes_mentioning, \
    state, wait_until  # noqa: F401 - bb is a fixture

RUNTIMES = ["builtin", "runc"]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


@pytest.mark.parametrize("rt", RUNTIMES)
def test_httpd_service_from_run_d_to_rm(soko, bb, rt, tmp_path):
    port = free_port()
    r = soko("run", "-d", "--runtime", rt, "--network", "host", "--name", "web", bb,
             "httpd", "-f", "-v", "-p", str(port), "-h", "/etc")
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), r.stdout
    assert r.stderr == ""
    status, body = wait_until(lambda: _try_get(f"http://127.0.0.1:{port}/passwd"), what="httpd answering")
    assert status == 200 and body.startswith("root:x:0:0:")
    ps = soko("ps").stdout.splitlines()
    assert ps[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert ps[1].startswith(cid[:12]) and ps[1].endswith("   web") and " Up " in ps[1]
    # httpd -v logs each request on stderr: in the json-file log, and from `logs` on stderr
    logs = wait_until(lambda: soko("logs", "web").stderr, what="a logged request")
    assert "response:200" in logs and soko("logs", "web").stdout == ""
    out = soko("exec", "web", "sh", "-c", "echo in $(hostname); cat /proc/1/cmdline | tr '\\0' ' '")
    assert out.stdout == f"in {os.uname().nodename}\nhttpd -f -v -p {port} -h /etc "  # host network
    assert soko("exec", "-e", "X=1", "-w", "/tmp", "-u", "app", "web", "sh", "-c", "echo $X $(pwd) $(id -un)"
                ).stdout == "1 /tmp app\n"
    started = time.monotonic()
    assert soko("stop", "-t", "1", "web").stdout == "web\n"
    assert time.monotonic() - started < 8
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/passwd")
    st = state(soko, "web")
    assert st["Status"] == "exited" and st["Running"] is False and st["Pid"] == 0
    assert st["FinishedAt"] > st["StartedAt"]
    assert re.search(r"   Exited \(\d+\) .* ago ", soko("ps", "-a").stdout)
    assert soko("rm", "web").stdout == "web\n"
    r = soko("rm", "web", check=False)
    assert r.returncode == 1 and r.stderr == "soko: No such container: web\n"
    assert_nothing_left(soko, [cid])


def _try_get(url: str):
    try:
        return _get(url)
    except OSError:
        return None


@pytest.mark.parametrize("rt", RUNTIMES)
def test_stop_sends_sigterm_then_sigkill_after_the_timeout(soko, bb, rt):
    soko("run", "-d", "--runtime", rt, "--network", "none", "--name", "stubborn", bb,
         "sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait")
    soko("run", "-d", "--runtime", rt, "--network", "none", "--name", "polite", bb,
         "sh", "-c", "trap 'echo bye; exit 7' TERM; echo ready; sleep 1000 & wait")
    for name in ("stubborn", "polite"):
        wait_until(lambda: soko("logs", name).stdout == "ready\n", what=f"{name} ready")
    t = time.monotonic()
    soko("stop", "-t", "2", "stubborn")
    took = time.monotonic() - t
    assert 1.8 <= took < 6, took  # ignored SIGTERM: killed after 2 s
    assert state(soko, "stubborn")["ExitCode"] == 137
    t = time.monotonic()
    soko("stop", "-t", "20", "polite")
    assert time.monotonic() - t < 5  # it left on SIGTERM, long before the timeout
    assert state(soko, "polite")["ExitCode"] == 7
    assert soko("logs", "polite").stdout == "ready\nbye\n"


def test_logs_follow_tail_timestamps_since(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "ticker", bb, "sh", "-c",
         "i=0; while [ $i -lt 1000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.2; done")
    wait_until(lambda: "line 2\n" in soko("logs", "ticker").stdout, what="three lines")
    p = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), "logs", "-f", "--tail", "1",
                          "ticker"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        first = p.stdout.readline()
        n = int(first.split()[1])
        # new lines keep coming through the follower as the container writes them
        assert [p.stdout.readline() for _ in range(3)] == [f"line {n + i}\n" for i in range(1, 4)]
        soko("stop", "-t", "0", "ticker")
        rest = p.communicate(timeout=10)[0]
        assert p.returncode == 0  # the follower ends with the container
        assert rest == "".join(f"line {i}\n" for i in range(n + 4, n + 4 + rest.count("\n")))
    finally:
        p.kill()
    out = soko("logs", "--tail", "4", "-t", "ticker")  # the last 4 records, both streams
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line \d+", x)
                                   for x in lines)
    assert len(out.stderr.splitlines()) == 2
    assert soko("logs", "--since", "1h", "ticker").stdout == soko("logs", "ticker").stdout
    assert soko("logs", "--since", str(time.time() + 60), "ticker").stdout == ""
    assert soko("logs", "ticker").stderr.startswith("err 0\nerr 1\n")


def test_exec_it_runs_on_a_real_terminal(soko, bb):
    import pty
    import select

    soko("run", "-d", "--network", "none", "--name", "box", bb, "sleep", "1000")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "soko", "--root", str(soko.root), "exec", "-it", "box", "sh"])
    buf = b""

    def until(token: bytes) -> bool:
        nonlocal buf
        deadline = time.monotonic() + 20
        while token not in buf and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    buf += os.read(fd, 4096)
                except OSError:
                    break
        return token in buf

    try:
        assert until(b"# "), buf
        os.write(fd, b"tty; echo $TERM; echo sum-$((40+2))\r")
        assert until(b"sum-42"), buf
        assert b"/dev/pts/" in buf and b"xterm" in buf
        os.write(fd, b"exit 3\r")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3
    assert soko("exec", "box", "sh", "-c", "exit 4", check=False).returncode == 4
    r = soko("exec", "box", "nosuchcmd", check=False)
    assert r.returncode == 126 and "executable file not found" in r.stderr
    r = soko("exec", "-u", "ghost", "box", "true", check=False)
    assert r.returncode == 126 and "ghost" in r.stderr
    # the same confinement as the container's first process
    conf = soko("exec", "box", "sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status").stdout
    first = soko("exec", "box", "sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/1/status").stdout
    assert conf == first and "NoNewPrivs:\t1" in conf and "Seccomp:\t2" in conf
    # in the container's cgroup and PID namespace: PID 1 is its sleep
    assert soko("exec", "box", "cat", "/proc/1/cmdline").stdout == "sleep\x001000\x00"
    cg = soko("exec", "box", "cat", "/proc/self/cgroup").stdout
    assert inspect(soko, "box")["Id"] in cg
    soko("exec", "-d", "box", "sh", "-c", "echo detached > /tmp/d")
    wait_until(lambda: soko("exec", "box", "cat", "/tmp/d", check=False).stdout == "detached\n")
    soko("rm", "-f", "box")
    r = soko("exec", "box", "true", check=False)
    assert r.returncode == 1 and "No such container" in r.stderr


def test_exec_into_a_foreground_run_rm_container(soko, bb):
    """`docker exec` works on a container started with `docker run --rm` in the foreground: the
    container is running and listed, so exec must find what it needs to join it."""
    fg = subprocess.Popen([*soko.argv(), "run", "--rm", "--network", "none", "--name", "fg", bb, "sleep", "1000"],
                          env=soko.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: "Up " in soko("ps", "--filter", "name=fg").stdout)
        r = soko("exec", "fg", "sh", "-c", "echo in-$((6*7)); cat /proc/1/cmdline", check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "in-42\nsleep\x001000\x00"
    finally:
        soko("kill", "fg", check=False)
        fg.wait(timeout=30)
    assert soko("ps", "-a", "-q").stdout == ""  # --rm still removed it


def test_names_ids_and_removal(soko, bb):
    a = soko("run", "--network", "none", "--name", "first", bb, "true").stdout
    assert a == ""
    cid = inspect(soko, "first")["Id"]
    r = soko("run", "--network", "none", "--name", "first", bb, "true", check=False)
    assert r.returncode == 125 and "already in use" in r.stderr
    assert inspect(soko, cid[:6])["Name"] == "/first"  # unique prefix
    assert inspect(soko, "/first")["Id"] == cid
    assert soko("start", "first").stdout == "first\n"
    ids = [cid]
    for _ in range(16):  # 17 containers: two share a first hex digit
        soko("run", "--network", "none", bb, "true")
    ids = [line.split()[0] for line in soko("ps", "-aq", "--no-trunc").stdout.splitlines()]
    firsts = [i[0] for i in ids]
    dup = next(c for c in firsts if firsts.count(c) > 1)
    r = soko("inspect", "--type", "container", dup, check=False)
    assert r.returncode == 1 and f"multiple IDs found with provided prefix: {dup}" in r.stderr
    names = [inspect(soko, i)["Name"] for i in ids if i != cid]
    assert all(re.fullmatch(r"/[a-z]+_[a-z]+\d*", n) for n in names)  # generated, Docker-style
    # default hostname: the 12-hex short ID (not with host networking)
    soko("run", "--network", "none", "--name", "h", bb, "hostname")
    assert soko("logs", "h").stdout == inspect(soko, "h")["Id"][:12] + "\n"
    assert inspect(soko, "h")["Config"]["Hostname"] == inspect(soko, "h")["Id"][:12]
    # a container without --rm can be removed, and its name used again
    soko("rm", "first")
    soko("run", "--rm", "--network", "none", "--name", "first", bb, "true")
    ids = [line for line in soko("ps", "-aq", "--no-trunc").stdout.splitlines()]
    assert len(ids) == 17 and cid not in ids  # 16 unnamed and h
    out = soko("container", "prune", "-f").stdout.splitlines()
    assert out[0] == "Deleted Containers:" and sorted(out[1:-2]) == sorted(ids) and out[-2:] == [
        "", "Total reclaimed space: 0B"]
    assert_nothing_left(soko, ids)


def test_start_attach_restart_kill_wait(soko, bb):
    soko("run", "--network", "none", "--name", "again", bb, "sh", "-c", "echo run; exit 3", check=False)
    r = soko("start", "-a", "again", check=False)
    assert r.returncode == 3 and r.stdout == "run\n"
    assert soko("logs", "again").stdout == "run\nrun\n"
    assert soko("wait", "again").stdout == "3\n"
    soko("create", "--network", "none", "--name", "cat", "-i", bb, "cat")
    assert state(soko, "cat")["Status"] == "created"
    assert " Created " in soko("ps", "-a", "--filter", "name=cat").stdout
    r = soko("start", "-ai", "cat", input="through stdin\n", timeout=20)
    assert r.stdout == "through stdin\n"  # the end of soko's stdin ended cat's
    assert state(soko, "cat")["ExitCode"] == 0
    soko("run", "-d", "--network", "none", "--name", "sleeper", bb, "sleep", "1000")
    pid = state(soko, "sleeper")["Pid"]
    soko("restart", "-t", "0", "sleeper")
    st = state(soko, "sleeper")
    assert st["Running"] and st["Pid"] != pid
    waiter = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), "wait", "sleeper"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    time.sleep(0.3)
    assert waiter.poll() is None
    assert soko("kill", "-s", "USR1", "sleeper").stdout == "sleeper\n"  # PID 1 has no handler: ignored
    time.sleep(0.3)
    assert state(soko, "sleeper")["Running"]
    soko("kill", "sleeper")
    assert waiter.communicate(timeout=10)[0] == "137\n"
    r = soko("kill", "sleeper", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr
    r = soko("rm", "-f", "sleeper", "nosuch", "again", check=False)
    assert r.returncode == 1 and r.stdout == "sleeper\nagain\n" and "No such container: nosuch" in r.stderr


def test_rm_refuses_a_running_container_and_rm_f_kills_it(soko, bb):
    mark = marker()
    cid = soko("run", "-d", "--network", "none", "--name", "busy", bb, "sleep", mark).stdout.strip()
    r = soko("rm", "busy", check=False)
    assert r.returncode == 1
    assert r.stderr == (f"soko: You cannot remove a running container {cid}. Stop the container before "
                        "attempting removal or force remove\n")
    assert processes_mentioning(f"sleep {mark}")
    soko("rm", "-f", "busy")
    assert_nothing_left(soko, [cid], [f"sleep {mark}"])


def test_ps_filters_and_formats(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "alpha", "-l", "tier=web", bb, "sleep", "1000")
    soko("run", "--network", "none", "--name", "beta", "-l", "tier=db", bb, "sh", "-c", "exit 2", check=False)
    assert soko("ps", "--format", "{{.Names}}").stdout == "alpha\n"
    assert soko("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout == "beta exited\nalpha running\n"
    assert soko("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}").stdout == "beta\n"
    assert soko("ps", "--filter", "status=exited", "--format", "{{.Names}}").stdout == "beta\n"
    assert soko("ps", "-a", "--filter", "label=tier=web", "-q").stdout == inspect(soko, "alpha")["Id"][:12] + "\n"
    assert soko("ps", "-a", "--filter", "label=tier", "-q").stdout.count("\n") == 2
    assert soko("ps", "-a", "--filter", "name=ph", "--format", "{{.Names}}").stdout == "alpha\n"
    assert soko("ps", "-a", "--filter", "exited=2", "--format", "{{.Names}}").stdout == "beta\n"
    bid = inspect(soko, "beta")["Id"]
    assert soko("ps", "-a", "--filter", f"id={bid[:5]}", "--format", "{{.ID}}").stdout == bid[:12] + "\n"
    import json

    rows = [json.loads(line) for line in soko("ps", "-a", "--format", "json").stdout.splitlines()]
    assert [r["Names"] for r in rows] == ["beta", "alpha"]
    assert rows[0]["Status"].startswith("Exited (2) ") and rows[0]["Labels"] == "tier=db"
    timeless = lambda r: {k: v for k, v in r.items() if k not in ("RunningFor", "Status")}  # noqa: E731
    assert [timeless(r) for r in rows] == [timeless(json.loads(line)) for line in
                                           soko("ps", "-a", "--format", "{{json .}}").stdout.splitlines()]
    table = soko("ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}").stdout.splitlines()
    assert table[0].split() == ["NAMES", "STATUS"] and table[1].startswith("beta      Exited (2) ")  # tabwriter: 10 wide at least
    r = soko("ps", "--filter", "bogus=1", check=False)
    assert r.returncode == 1 and "invalid filter" in r.stderr
    r = soko("ps", "--format", "{{.Nope}}", check=False)
    assert r.returncode == 1 and "Nope" in r.stderr
    assert soko("inspect", "-f", "{{.State.Status}} {{.Config.Labels}}", "alpha").stdout == \
        "running map[tier:web]\n"
    assert soko("port", "alpha").stdout == ""
    r = soko("port", "alpha", "80", check=False)
    assert r.returncode == 1 and "No public port '80/tcp' published for alpha" in r.stderr
    top = soko("top", "alpha").stdout.splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"] and len(top) == 2 and top[1].endswith("sleep 1000")
    soko("rm", "-f", "alpha", "beta")


def test_killed_monitor_leaves_the_truth_and_rm_cleans_up(soko, bb):
    mark = {rt: marker() for rt in RUNTIMES}
    for rt in RUNTIMES:
        soko("run", "-d", "--runtime", rt, "--network", "none", "--name", f"victim-{rt}", bb, "sleep", mark[rt])
    ids = [inspect(soko, f"victim-{rt}")["Id"] for rt in RUNTIMES]
    for cid in ids:
        found = {int(line.split()[0]) for line in processes_mentioning(cid) if "runtime.monitor" in line}
        # the monitor, not the runc watcher it forked (same command line)
        monitor = [p for p in found if _ppid(p) not in found]
        assert len(monitor) == 1
        os.kill(monitor[0], signal.SIGKILL)
    for rt in RUNTIMES:
        # the container dies with its monitor (the runc one through its watcher)
        wait_until(lambda: not processes_mentioning(f"sleep {mark[rt]}"), what=f"the {rt} container to die")
        st = state(soko, f"victim-{rt}")
        assert st["Status"] == "exited" and st["ExitCode"] == 137 and not st["Running"] and st["Pid"] == 0
        assert "monitor process" in st["Error"] and "died" in st["Error"]
        line = next(x for x in soko("ps", "-a").stdout.splitlines() if x.endswith(f"victim-{rt}"))
        assert "Exited (137) " in line
    soko("rm", *[f"victim-{rt}" for rt in RUNTIMES])
    assert_nothing_left(soko, ids, [f"sleep {m}" for m in mark.values()])


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_run_pulls_a_missing_image(soko, bb, tmp_path):
    from tests.conftest import SokoCLI

    from .test_serve_cli import start

    p, url = start(tmp_path / "reg-store", "--addr", "127.0.0.1:0")
    try:
        host = url.split("//")[1]
        soko("push", bb, f"{host}/team/bb:1")
        fresh = SokoCLI(tmp_path / "fresh")
        r = fresh("run", "--rm", "--network", "none", "--pull", "never", f"{host}/team/bb:1", "true", check=False)
        assert r.returncode == 125 and "no such image" in r.stderr
        r = fresh("run", "--rm", "--network", "none", f"{host}/team/bb:1", "echo", "pulled")
        assert r.stdout == "pulled\n"
        assert r.stderr.startswith(f"Unable to find image '{host}/team/bb:1' locally\n") and "Digest: sha256:" in r.stderr
        r = fresh("run", "-d", "--network", "none", "--pull", "always", f"{host}/team/bb:1", "true")
        assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout)  # only the ID on stdout, pull progress on stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)
