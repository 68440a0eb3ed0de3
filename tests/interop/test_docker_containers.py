"""soko's container verbs beside Docker Engine's: the same commands on the same busybox root,
compared field by field (ps, logs, diff, inspect), as a user moving between the two sees them."""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import need_root

SCRIPT = "echo out; echo err >&2; printf 'no newline'"
CHANGE = ("mkdir -p /newd && echo x > /newd/f && echo extra >> /etc/passwd && rm /bin/vi && touch /tmp/t "
          "&& rm -rf /home && mkdir -p /home/again && ln -s /newd/f /link")


@pytest.fixture
def both(soko, busybox_rootfs, docker_engine):
    """(soko, docker) with the same busybox root as `bb:local` / `busybox:local`; containers named
    here are removed from both afterwards."""
    need_root()
    soko("import", busybox_rootfs, "busybox:local")
    names: list[str] = []
    yield soko, docker_engine, names
    if names:
        docker_engine("rm", "-f", *names, check=False)
        soko("rm", "-f", *names, check=False)


def _name(names: list[str], base: str) -> str:
    n = f"{base}{time.monotonic_ns() % 10**9}"
    names.append(n)
    return n


def test_ps_table_and_json_have_dockers_shape(both):
    soko, docker, names = both
    up, done = _name(names, "up"), _name(names, "done")
    for run in (soko, docker):
        run("run", "-d", "--network", "none", "--name", up, "busybox:local", "sh", "-c", "sleep 1000")
        assert run("run", "--network", "none", "--name", done, "busybox:local", "sh", "-c", "exit 3",
                   check=False).returncode == 3
    time.sleep(1.2)
    ours = soko("ps", "-a", "--filter", f"name={up}", "--filter", f"name={done}").stdout.splitlines()
    theirs = docker.out("ps", "-a", "--filter", f"name={up}", "--filter", f"name={done}").splitlines()
    assert ours[0].split("   ") == theirs[0].split("   ") or ours[0].split() == theirs[0].split()
    assert sorted(_cells(ours)) == sorted(_cells(theirs))
    for table in (ours, theirs):
        _tabwriter_widths(table)
    o = json.loads(soko("ps", "--filter", f"name={up}", "--format", "{{json .}}").stdout)
    t = json.loads(docker.out("ps", "--filter", f"name={up}", "--format", "{{json .}}"))
    assert set(o) == set(t)
    for key in ("Command", "Image", "Labels", "LocalVolumes", "Mounts", "Names", "Networks", "Ports", "State"):
        assert o[key] == t[key], key
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+", o["CreatedAt"])
    assert o["Status"].startswith("Up ") and t["Status"].startswith("Up ")


def _columns(header: str) -> list[int]:
    return [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]


def _cells(table: list[str]) -> list[list[str]]:
    """Rows cut at the header's column starts; ids and times normalized."""
    starts = _columns(table[0]) + [None]
    out = []
    for line in table[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:])]
        out.append([re.sub(r"\d+ seconds?|Less than a second|About a minute", "T",
                           re.sub(r"^[0-9a-f]{12}$", "ID", c)) for c in cells])
    return out


def _tabwriter_widths(table: list[str]) -> None:
    """Go's tabwriter as Docker uses it: each column max(10, widest cell + 3) wide."""
    starts = _columns(table[0])
    for i, (a, b) in enumerate(zip(starts, starts[1:])):
        widest = max(len(line[a:b].rstrip()) for line in table)
        assert b - a == max(10, widest + 3), (table[0], i)


def test_logs_match_dockers(both):
    soko, docker, names = both
    name = _name(names, "logs")
    soko("run", "--network", "none", "--name", name, "busybox:local", "sh", "-c", SCRIPT)
    docker("run", "--network", "none", "--name", name, "busybox:local", "sh", "-c", SCRIPT)
    o, t = soko("logs", name), docker("logs", name)
    assert (o.stdout, o.stderr) == (t.stdout.decode(), t.stderr.decode()) == ("out\nno newline", "err\n")
    for args in (["--tail", "1"], ["--tail", "0"], ["--since", "10m"]):
        o, t = soko("logs", *args, name), docker("logs", *args, name)
        assert (o.stdout, o.stderr) == (t.stdout.decode(), t.stderr.decode()), args
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z "
    for out in (soko("logs", "-t", name).stdout, docker.out("logs", "-t", name)):
        assert re.fullmatch(f"{stamp}out\n{stamp}no newline", out), out
    # the log file itself: Docker's json-file records
    ours = (soko.root / "containers").glob("*/*-json.log")
    recs = [json.loads(line) for line in next(ours).read_text().splitlines()]
    assert [(r["log"], r["stream"]) for r in recs] == [("out\n", "stdout"), ("err\n", "stderr"),
                                                       ("no newline", "stdout")]
    assert all(list(r) == ["log", "stream", "time"] for r in recs)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", r["time"]) for r in recs)


def test_diff_matches_dockers(both):
    soko, docker, names = both
    name = _name(names, "diff")
    for run in (soko, docker):
        run("run", "-d", "--network", "none", "--name", name, "-v", f"{name}vol:/data", "-w", "/made/by/w",
            "busybox:local", "sleep", "1000")
        run("exec", name, "sh", "-c", CHANGE)
    ours = soko("diff", name).stdout.splitlines()
    theirs = docker.out("diff", name).splitlines()
    assert sorted(ours) == sorted(theirs)
    assert "D /home/app" in ours and "A /made/by/w" in ours and "A /data" in ours
    docker("volume", "rm", "-f", f"{name}vol", check=False)


def test_inspect_has_dockers_fields(both):
    soko, docker, names = both
    name = _name(names, "insp")
    for run in (soko, docker):
        run("run", "-d", "--network", "none", "--name", name, "-e", "A=1", "-l", "k=v", "--restart",
            "on-failure:3", "busybox:local", "sleep", "1000")
    o = json.loads(soko("inspect", name).stdout)[0]
    t = json.loads(docker.out("inspect", name))[0]
    assert set(t) - set(o) == set(), "top-level fields Docker has and soko lacks"
    assert set(o["State"]) == set(t["State"])
    for key in ("Status", "Running", "Paused", "Restarting", "OOMKilled", "Dead", "ExitCode", "Error"):
        assert o["State"][key] == t["State"][key], key
    assert o["State"]["Pid"] > 0 and t["State"]["Pid"] > 0
    assert o["State"]["FinishedAt"] == t["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    for key in ("Path", "Args", "Name", "RestartCount", "Platform", "Mounts"):
        assert o[key] == t[key], key
    assert re.fullmatch(r"[0-9a-f]{64}", o["Id"]) and o["Image"].startswith("sha256:")
    assert set(t["Config"]) <= set(o["Config"])
    for key in ("Hostname", "Domainname", "User", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Image",
                "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels", "AttachStdin", "AttachStdout"):
        if key == "Hostname":
            assert re.fullmatch(r"[0-9a-f]{12}", o["Config"][key]) and o["Config"][key] == o["Id"][:12]
        else:
            assert o["Config"][key] == t["Config"][key], key
    for key in ("NetworkMode", "RestartPolicy", "PortBindings", "AutoRemove", "Binds", "LogConfig",
                "PublishAllPorts", "ReadonlyRootfs", "IpcMode", "Privileged", "ReadonlyPaths"):
        assert o["HostConfig"][key] == t["HostConfig"][key], key
    # soko also masks /sys/devices/virtual/powercap, as newer Docker releases do
    assert set(t["HostConfig"]["MaskedPaths"]) <= set(o["HostConfig"]["MaskedPaths"])
    ns_o, ns_t = o["NetworkSettings"], t["NetworkSettings"]
    assert set(ns_t) <= set(ns_o) and list(ns_o["Networks"]) == list(ns_t["Networks"]) == ["none"]
    assert set(ns_o["Networks"]["none"]) == set(ns_t["Networks"]["none"])
    assert ns_o["Ports"] == ns_t["Ports"] == {} and ns_o["IPAddress"] == ns_t["IPAddress"] == ""
    # -f templates give the same text for the same fields
    for template in ("{{.State.Status}}", "{{.Name}} {{.RestartCount}}", "{{json .Config.Cmd}}",
                     "{{json .HostConfig.RestartPolicy}}", "{{.Config.Labels}}"):
        assert soko("inspect", "-f", template, name).stdout == docker.out("inspect", "-f", template, name), template
    for run in (soko, docker):
        run("stop", "-t", "0", name)
    o = json.loads(soko("inspect", name).stdout)[0]["State"]
    t = json.loads(docker.out("inspect", name))[0]["State"]
    assert (o["Status"], o["ExitCode"], o["Running"]) == (t["Status"], t["ExitCode"], t["Running"]) == \
        ("exited", 137, False)
    assert o["FinishedAt"] > o["StartedAt"] and t["FinishedAt"] > t["StartedAt"]


def test_errors_and_prefixes_match_dockers(both):
    soko, docker, names = both
    for args in (["rm", "nosuch"], ["logs", "nosuch"], ["stop", "nosuch"]):
        o, t = soko(*args, check=False), docker(*args, check=False)
        assert o.returncode == t.returncode == 1
        assert o.stderr.replace("soko: ", "") == t.stderr.decode().replace("Error: ", "").replace(
            "Error response from daemon: ", "")
    name = _name(names, "run")
    for run in (soko, docker):
        run("run", "-d", "--network", "none", "--name", name, "busybox:local", "sleep", "1000")
    o, t = soko("rm", name, check=False), docker("rm", name, check=False)
    assert o.returncode == t.returncode == 1
    strip = lambda s: re.sub(r"[0-9a-f]{64}", "ID", s)  # noqa: E731
    assert strip(o.stderr.replace("soko: ", "")) == strip(t.stderr.decode().replace(
        "Error response from daemon: ", ""))
    assert soko("rm", "-f", name).stdout == docker.out("rm", "-f", name) == f"{name}\n"
