"""Isolation facts read from inside containers, under the built-in executor and runc, same spec."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

from .conftest import run_cli
from .helpers import add_image

RUNTIMES = ["builtin", "runc"]

FACTS = r"""
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline | cut -c1-6)"
echo "nprocs=$(ls -d /proc/[0-9]* | wc -l)"
echo "hostname=$(hostname)"
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo "mounts=$(cut -d' ' -f5 /proc/self/mountinfo | sort -u | tr '\n' ' ')"
echo "netifs=$(ls /sys/class/net | tr '\n' ' ')"
echo "id=$(id)"
echo "pwd=$(pwd)"
echo "FOO=$FOO"
echo "BAR=$BAR"
echo "root_rw=$(touch /x 2>/dev/null && echo yes || echo no)"
echo "proc_sys_rw=$(echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo yes || echo no)"
"""

ALLOWED_MOUNTS = {
    "/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/data",
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/console",
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}


def facts(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_isolation_facts(store, rt, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("BAR=from-file\nFOO=overridden\n")
    p = run_cli(store.root, "--rm", "--runtime", rt, "--network", "none", "-h", "box1", "-e", "FOO=bar",
                "--env-file", str(env_file), "-w", "/work/dir", "--tmpfs", "/data", "--read-only",
                "busybox", "sh", "-c", FACTS + "exit 42")
    f = facts(p.stdout.decode())
    assert p.returncode == 42, p.stderr
    assert f["pid1"] == "sh -c "
    assert int(f["nprocs"]) <= 4, f  # sh, the $( ) subshell, ls and wc: no host process
    assert f["hostname"] == "box1"
    assert f["CapEff"] == "00000000a80425fb"
    assert f["NoNewPrivs"] == "1"
    mounts = set(f["mounts"].split())
    core = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/etc/hosts",
            "/etc/hostname", "/etc/resolv.conf", "/proc/sys", "/data"}
    assert core <= mounts
    extra = {m for m in mounts - ALLOWED_MOUNTS if not m.startswith("/sys/fs/cgroup/")}
    assert not extra, f"unexpected mounts (host leaking in?): {extra}"
    assert f["netifs"].split() == ["lo"]
    assert f["id"].startswith("uid=0(root) gid=0(root)")
    assert f["pwd"] == "/work/dir"
    assert f["FOO"] == "bar" and f["BAR"] == "from-file"
    assert f["root_rw"] == "no"
    assert f["proc_sys_rw"] == "no"


@pytest.mark.parametrize("rt", RUNTIMES)
def test_users_from_option_and_image(store, rt):
    img = store.resolve("busybox")
    add_image(store, [store.blobs.read_bytes(img.manifest.layers[0].digest)],
              {"Cmd": ["id"], "User": "app", "WorkingDir": "/home/app"}, tag="busybox-app")
    p = run_cli(store.root, "--rm", "--runtime", rt, "busybox-app", "sh", "-c",
                "id; pwd; grep CapEff /proc/self/status")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "uid=1000(app) gid=1000(app) groups=50(staff)" in out
    assert "/home/app" in out
    assert "CapEff:\t0000000000000000" in out  # non-root after exec: no effective capabilities
    p = run_cli(store.root, "--rm", "--runtime", rt, "-u", "65534:50", "busybox-app", "id")
    assert p.stdout.decode().startswith("uid=65534(nobody) gid=50(staff)"), p.stderr
    p = run_cli(store.root, "--rm", "--runtime", rt, "-u", "4242:4343", "busybox", "id", "-G")
    assert p.stdout.decode().split() == ["4343"], p.stderr
    p = run_cli(store.root, "--rm", "--runtime", rt, "-u", "ghost", "busybox", "true")
    assert p.returncode == 125 and b"unable to find user ghost" in p.stderr


DOCKER_CAPS = "00000000a80425fb"
NONE = "0000000000000000"


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("user", [None, "1000", "65534:50"])
def test_capability_sets(store, rt, user):
    """Docker's sets: root has the default 14 capabilities bounding, permitted and effective;
    any other user keeps the same bounding set and nothing permitted or effective; nothing is
    inheritable or ambient for anyone (so an exec cannot carry capabilities over)."""
    p = run_cli(store.root, "--rm", "--runtime", rt, *(["-u", user] if user else []), "busybox", "sh", "-c",
                "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status | tr -d '\\t'")
    got = dict(line.split(":") for line in p.stdout.decode().split())
    assert p.returncode == 0, p.stderr
    held = DOCKER_CAPS if user is None else NONE
    assert got == {"CapInh": NONE, "CapPrm": held, "CapEff": held, "CapBnd": DOCKER_CAPS, "CapAmb": NONE}


@pytest.mark.parametrize("rt", RUNTIMES)
def test_memory_limit_kills_a_hog(store, rt):
    p = run_cli(store.root, "--rm", "--runtime", rt, "--memory", "32m", "busybox", "sh", "-c",
                "x=a; while true; do x=$x$x; done", timeout=120)
    assert p.returncode == 137, p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_pids_limit(store, rt):
    p = run_cli(store.root, "--rm", "--runtime", rt, "--pids-limit", "10", "busybox", "sh", "-c",
                "i=0; while [ $i -lt 20 ]; do sleep 5 & i=$((i+1)); done; echo all-started")
    assert b"all-started" not in p.stdout
    assert b"can't fork" in p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_cpus_limit_is_set(store, rt):
    p = run_cli(store.root, "--rm", "--runtime", rt, "--cpus", "0.5", "busybox", "sh", "-c",
                "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max")
    assert p.stdout.decode().strip() == "50000", p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_host_network_and_exit_statuses(store, rt):
    import socket

    p = run_cli(store.root, "--rm", "--runtime", rt, "--network", "host", "busybox", "hostname")
    assert p.stdout.decode().strip() == socket.gethostname()
    assert run_cli(store.root, "--rm", "--runtime", rt, "busybox", "nosuchcmd").returncode == 127
    assert run_cli(store.root, "--rm", "--runtime", rt, "busybox", "/etc/passwd").returncode == 126


@pytest.mark.parametrize("rt", RUNTIMES)
def test_sigterm_reaches_the_process(store, rt):
    cmd = [sys.executable, "-m", "runtime", "run", "--root", str(store.root), "--rm", "--runtime", rt,
           "busybox", "sh", "-c", 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 7, err
    assert b"got-term" in out


@pytest.mark.parametrize("rt", RUNTIMES)
def test_stdin_with_i_and_not_without(store, rt):
    p = run_cli(store.root, "--rm", "-i", "--runtime", rt, "busybox", "sh", "-c", "tr a-z A-Z",
                input=b"hello\n")
    assert p.stdout == b"HELLO\n", p.stderr
    p = run_cli(store.root, "--rm", "--runtime", rt, "busybox", "cat", input=b"hello\n")
    assert p.stdout == b"" and p.returncode == 0


@pytest.mark.parametrize("rt", RUNTIMES)
def test_tty(store, rt):
    p = run_cli(store.root, "--rm", "-t", "--runtime", rt, "busybox", "sh", "-c",
                "tty; [ -t 0 ] && [ -t 1 ] && echo both-tty; echo TERM=$TERM")
    out = p.stdout.decode().replace("\r", "")
    assert "/dev/pts/0" in out and "both-tty" in out and "TERM=xterm" in out, (out, p.stderr)


def test_zombies_are_reaped_with_the_container(store):
    """An orphan left behind dies with PID 1 and nothing of it stays on the host."""
    marker = f"sleep {300 + int.from_bytes(os.urandom(3), 'big')}"  # no other run on the machine uses it
    p = run_cli(store.root, "--rm", "busybox", "sh", "-c", f"({marker} &) ; echo $$")
    assert p.returncode == 0
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout
    assert marker not in ps


def test_crun_runs_where_it_can(store):
    """crun refuses hybrid cgroup hosts (like this one): a clear 125 there, a working run elsewhere."""
    from runtime import cgroups

    p = run_cli(store.root, "--rm", "--runtime", "crun", "--network", "none", "busybox", "sh", "-c",
                "echo hi; grep NoNewPrivs /proc/self/status")
    if cgroups.system().mode == "hybrid":
        assert p.returncode == 125
        assert b"hybrid" in p.stderr
    else:
        assert p.returncode == 0, p.stderr
        assert p.stdout.decode().split() == ["hi", "NoNewPrivs:", "1"]
    assert [n for n in os.listdir(store.root / "containers") if n != ".lock"] == []


@pytest.mark.parametrize("rt", RUNTIMES)
def test_named_volume_is_seeded_from_the_image_and_kept(store, rt):
    vol = f"seed-{rt}"
    p = run_cli(store.root, "--rm", "--runtime", rt, "-v", f"{vol}:/home", "busybox", "sh", "-c",
                "stat -c '%n %u' /home/app; echo kept > /home/note")
    assert p.stdout.decode().split() == ["/home/app", "1000"], p.stderr
    data = store.root / "volumes" / vol / "_data"
    assert (data / "note").read_text() == "kept\n" and (data / "app").stat().st_uid == 1000
    p = run_cli(store.root, "--rm", "--runtime", rt, "-v", f"{vol}:/elsewhere:ro", "busybox", "sh", "-c",
                "cat /elsewhere/note; touch /elsewhere/x 2>/dev/null || echo read-only")
    assert p.stdout.decode().split() == ["kept", "read-only"], p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_entrypoint_option(store, rt):
    p = run_cli(store.root, "--rm", "--runtime", rt, "--entrypoint", "echo", "busybox", "a", "b")
    assert p.stdout == b"a b\n", p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_image_without_layers(store, rt):
    """A scratch image: the root is an empty overlay; a bind-mounted static busybox runs in it."""
    add_image(store, [], {"Cmd": ["/nothing"]}, tag="scratch")
    assert run_cli(store.root, "--rm", "--runtime", rt, "scratch").returncode == 127
    p = run_cli(store.root, "--rm", "--runtime", rt, "-v", "/bin/busybox:/busybox:ro", "--entrypoint", "/busybox",
                "scratch", "ls", "/")
    assert p.returncode == 0, p.stderr
    assert set(p.stdout.decode().split()) >= {"busybox", "dev", "etc", "proc", "sys"}


@pytest.mark.parametrize("rt", RUNTIMES)
def test_interactive_shell_on_a_terminal(store, rt):
    """-i -t from a real terminal: keystrokes in, echo and output back, the exit status out."""
    import pty
    import select as sel

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "runtime", "run", "--root", str(store.root), "--rm",
                                  "-i", "-t", "--runtime", rt, "busybox", "sh"])
    out = b""

    def read_until(token: bytes, timeout: float = 20) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            if sel.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        assert token in out, out

    try:
        read_until(b"# ")  # the prompt
        os.write(fd, b"echo $((6*7)); tty\n")
        read_until(b"/dev/pts/0")
        assert b"42" in out
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_relative_store_root(store):
    rel = os.path.relpath(store.root, REPO)
    p = subprocess.run([sys.executable, "-m", "runtime", "run", "--root", rel, "--rm", "busybox", "sh", "-c",
                        "echo ok; grep ' / ' /proc/self/mountinfo"], cwd=REPO, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"ok\n") and b" overlay " in p.stdout  # the overlay, not the copy fallback
