"""Restart policies and health checks, kept by the monitor after soko has exited."""
from __future__ import annotations

import math
import os
import signal
import time

import pytest

from .containers_helpers import bb, inspect, state, wait_until  # noqa: F401 - bb is a fixture


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_on_failure_restarts_exactly_n_times(soko, bb, rt):
    soko("run", "-d", "--runtime", rt, "--network", "none", "--name", "flaky", "--restart", "on-failure:2", bb,
         "sh", "-c", "echo attempt; exit 5")
    wait_until(lambda: state(soko, "flaky")["Status"] == "exited", what="the last attempt")
    time.sleep(1.0)  # a third restart would come within 400 ms (back-off 100, 200, 400 ms)
    d = inspect(soko, "flaky")
    assert d["RestartCount"] == 2 and d["State"]["ExitCode"] == 5
    assert d["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert soko("logs", "flaky").stdout == "attempt\n" * 3
    assert " Exited (5) " in soko("ps", "-a").stdout


def test_on_failure_does_not_restart_a_success(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "fine", "--restart", "on-failure", bb, "true")
    wait_until(lambda: state(soko, "fine")["Status"] == "exited")
    time.sleep(0.5)
    assert inspect(soko, "fine")["RestartCount"] == 0


def test_always_comes_back_after_the_process_dies_not_after_stop(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "phoenix", "--restart", "always", bb, "sleep", "1000")
    first = state(soko, "phoenix")["Pid"]
    os.kill(first, signal.SIGKILL)  # from outside soko: the process just dies
    st = wait_until(lambda: (s := state(soko, "phoenix"))["Status"] == "running" and s["Pid"] != first and s,
                    what="the restart")
    assert inspect(soko, "phoenix")["RestartCount"] == 1 and st["Pid"] != first
    soko("exec", "phoenix", "true")  # a running container again
    soko("stop", "-t", "1", "phoenix")
    time.sleep(1.0)
    st = state(soko, "phoenix")
    assert st["Status"] == "exited" and inspect(soko, "phoenix")["RestartCount"] == 1
    soko("start", "phoenix")  # the policy is back with the next start
    second = state(soko, "phoenix")["Pid"]
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: (s := state(soko, "phoenix"))["Status"] == "running" and s["Pid"] != second)
    soko("kill", "phoenix")  # SIGKILL through soko: stopped for good, as Docker's kill
    time.sleep(1.0)
    assert state(soko, "phoenix")["Status"] == "exited"


def test_unless_stopped_and_backoff(soko, bb):
    t0 = time.monotonic()
    soko("run", "-d", "--network", "none", "--name", "loop", "--restart", "unless-stopped", bb, "sh", "-c", "exit 1")
    time.sleep(2.0)
    n = inspect(soko, "loop")["RestartCount"]
    elapsed = time.monotonic() - t0
    # back-off doubles from 100 ms, and a restart is counted as its wait begins: reaching k takes
    # at least 0.1+0.2+...+0.1*2^(k-2) = 0.1*(2^(k-1)-1) s, so `elapsed` seconds allow at most
    # 1+log2(elapsed/0.1 + 1) (5 in 1.5 s, 6 in 3.1 s on a busy machine whose commands are slow);
    # without the back-off there would be dozens.
    most = 1 + int(math.log2(elapsed / 0.1 + 1))
    assert 3 <= n <= most, (n, most, elapsed)
    soko("stop", "loop")
    assert state(soko, "loop")["Status"] == "exited"


def test_image_healthcheck_turns_healthy_and_a_failing_one_unhealthy(soko, bb, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nHEALTHCHECK --interval=3s --timeout=5s CMD test -e /tmp/ok\n")
    soko("build", "-q", "-t", "checked:1", ctx)
    soko("run", "-d", "--network", "none", "--name", "hc", "checked:1", "sh", "-c", "touch /tmp/ok; sleep 1000")
    assert "(health: starting)" in soko("ps", "--filter", "name=hc").stdout  # no probe for 3 s
    wait_until(lambda: "(healthy)" in soko("ps", "--filter", "name=hc", "--format", "{{.Status}}").stdout,
               what="healthy")
    health = state(soko, "hc")["Health"]
    assert health["Status"] == "healthy" and health["FailingStreak"] == 0
    assert health["Log"][-1]["ExitCode"] == 0
    assert inspect(soko, "hc")["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "test -e /tmp/ok"]
    soko("exec", "hc", "rm", "/tmp/ok")
    wait_until(lambda: "(unhealthy)" in soko("ps", "--filter", "name=hc", "--format", "{{.Status}}").stdout,
               timeout=30, what="unhealthy after 3 failures")
    health = state(soko, "hc")["Health"]
    assert health["FailingStreak"] >= 3 and health["Log"][-1]["ExitCode"] == 1 and len(health["Log"]) <= 5


def test_health_flags_output_timeout_and_no_healthcheck(soko, bb):
    soko("run", "-d", "--network", "none", "--name", "bad", "--health-cmd", "echo nope; exit 3",
         "--health-interval", "500ms", "--health-retries", "2", bb, "sleep", "1000")
    soko("run", "-d", "--network", "none", "--name", "slow", "--health-cmd", "sleep 5",
         "--health-interval", "300ms", "--health-timeout", "200ms", "--health-retries", "1", bb, "sleep", "1000")
    wait_until(lambda: "(unhealthy)" in soko("ps", "--filter", "name=bad", "--format", "{{.Status}}").stdout)
    log = state(soko, "bad")["Health"]["Log"]
    assert log[-1]["Output"] == "nope\n" and log[-1]["ExitCode"] == 3
    assert inspect(soko, "bad")["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "echo nope; exit 3"], "Interval": 500_000_000, "Retries": 2}
    wait_until(lambda: state(soko, "slow").get("Health", {}).get("Status") == "unhealthy")
    last = state(soko, "slow")["Health"]["Log"][-1]
    assert last["ExitCode"] == -1 and last["Output"] == "Health check exceeded timeout (200ms)"
    # probes that timed out are killed, they do not pile up (one runs at a time)
    for _ in range(5):
        probes = [line for line in soko("top", "slow").stdout.splitlines()[1:] if "sleep 1000" not in line]
        assert len(probes) <= 1, probes
        time.sleep(0.3)
    soko("run", "-d", "--network", "none", "--name", "none", "--no-healthcheck", "--health-interval", "1s", bb,
         "sleep", "1000")
    assert "Health" not in state(soko, "none") and "(health" not in soko("ps", "--filter", "name=none").stdout
    r = soko("run", "--network", "none", "--no-healthcheck", "--health-cmd", "true", bb, "true", check=False)
    assert r.returncode == 125 and "conflicts" in r.stderr
    r = soko("run", "--network", "none", "--health-interval", "soon", bb, "true", check=False)
    assert r.returncode == 125 and "invalid duration" in r.stderr
    r = soko("run", "--rm", "--restart", "always", bb, "true", check=False)
    assert r.returncode == 125 and "conflicting options: --restart and --rm" in r.stderr


def test_foreground_run_with_a_policy_goes_through_the_monitor(soko, bb):
    """`run` without -d of a container that needs a monitor: soko attaches to it and exits with
    the first run's status; the monitor goes on restarting it."""
    r = soko("run", "--network", "none", "--name", "fg", "--restart", "on-failure:1", bb,
             "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert r.returncode == 4 and r.stdout == "out\n" and r.stderr == "err\n"
    wait_until(lambda: inspect(soko, "fg")["RestartCount"] == 1 and state(soko, "fg")["Status"] == "exited")
    assert soko("logs", "fg").stdout == "out\nout\n"
    r = soko("run", "-i", "--network", "none", "--name", "fgi", "--health-cmd", "true", bb, "cat",
             input="fed through the monitor\n")
    assert r.stdout == "fed through the monitor\n"


def test_foreground_rm_with_a_health_check_shows_all_output_and_goes(soko, bb):
    r = soko("run", "--rm", "--network", "none", "--health-cmd", "true", "--health-interval", "100ms", bb,
             "sh", "-c", "sleep 0.5; seq 1 2000; exit 6", check=False)
    assert r.returncode == 6 and r.stdout == "".join(f"{i}\n" for i in range(1, 2001))
    assert soko("ps", "-aq").stdout == ""
