"""--rm leaves nothing behind: no mount, no container directory, no cgroup, no process;
also after failed runs and after the soko process itself was SIGKILLed."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import RunOptions, run
from runtime.errors import ContainerError
from tests.conftest import REPO


def cgroup_dirs(ids) -> set[str]:
    """The cgroups of these containers still on the machine (only this test's: other test runs
    on the machine make and remove their own meanwhile)."""
    ids = set(ids)
    return {p for p in glob.glob("/sys/fs/cgroup/**/soko/*", recursive=True)
            if os.path.basename(p) in ids and os.path.isdir(p)}


def mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


def container_dirs(root: Path) -> list[str]:
    try:
        return [n for n in os.listdir(root / "containers") if n != ".lock"]
    except FileNotFoundError:
        return []


def procs_with(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "pytest" not in line]


def test_fifty_runs_leave_nothing(store, tmp_path):
    devnull = os.open(os.devnull, os.O_WRONLY)
    statuses = []
    ids: list[str] = []

    def event(kind: str, msg: str) -> None:
        if kind == "created":
            ids.append(msg)
    try:
        for i in range(50):
            kind = i % 5
            opts = RunOptions(rm=True, network="none", command=["true"])
            if kind == 0:
                opts.command = ["sh", "-c", "exit 3"]
            elif kind == 1:
                opts.command = ["nosuchcmd"]
            elif kind == 2:
                opts.user = "ghost"
            elif kind == 3:
                opts.volumes = [f"{tmp_path}:/host", "vol:/vol"]
                opts.tmpfs = ["/scratch"]
                opts.memory, opts.pids_limit = 64 << 20, 50
                opts.command = ["sh", "-c", "touch /host/x /vol/y /scratch/z"]
            try:
                statuses.append(run(store, "busybox", opts, stdout=devnull, stderr=devnull, on_event=event))
            except ContainerError as e:
                statuses.append(e.status)
    finally:
        os.close(devnull)
    assert statuses == [3, 127, 125, 0, 0] * 10
    assert len(ids) == 40  # the unknown user fails before anything is made
    assert mounts_mentioning(str(store.root)) == []
    assert container_dirs(store.root) == []
    assert store.db.query("SELECT id FROM containers") == []
    assert cgroup_dirs(ids) == set()
    assert sorted(os.listdir(store.root / "snapshots")) == sorted(
        n for n in os.listdir(store.root / "snapshots") if not n.startswith("."))


def _wait_running(root: Path, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in container_dirs(root):
            try:
                st = json.loads((root / "containers" / n / "state.json").read_text())
            except (OSError, ValueError):
                continue
            if st.get("status") == "running":
                return st
        time.sleep(0.05)
    raise AssertionError("container did not start")


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_killed_soko_is_cleaned_up_by_the_next_run(store, rt):
    marker = "3131" if rt == "builtin" else "3132"
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "run", "--root", str(store.root), "--rm",
                             "--runtime", rt, "--memory", "64m", "busybox", "sleep", marker],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        st = _wait_running(store.root)  # state.json names it from the start
        deadline = time.monotonic() + 10
        while not procs_with(f"sleep {marker}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs_with(f"sleep {marker}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert container_dirs(store.root) == [st["id"]]  # left behind, for now
    devnull = os.open(os.devnull, os.O_WRONLY)
    events: list[tuple[str, str]] = []
    try:
        assert run(store, "busybox", RunOptions(rm=True, command=["true"]), stdout=devnull,
                   on_event=lambda k, m: events.append((k, m))) == 0
    finally:
        os.close(devnull)
    assert ("swept", f"cleaned up container {st['id']} left by a killed soko") in events
    deadline = time.monotonic() + 5
    while procs_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs_with(f"sleep {marker}") == []
    assert container_dirs(store.root) == []
    assert mounts_mentioning(str(store.root)) == []
    assert cgroup_dirs([st["id"]]) == set()
    if rt == "runc":
        assert not os.path.exists(f"/run/soko/runc/{st['oci_id']}")


@pytest.mark.parametrize("rt", ["builtin", "runc"])
@pytest.mark.parametrize("user", ["0", "1000"])
def test_container_dies_with_a_killed_soko(store, rt, user):
    """No later soko is needed: a foreground container goes when the soko running it is SIGKILLed,
    for root and for a non-root user (whose setresuid clears PR_SET_PDEATHSIG), in both executors."""
    marker = f"{os.getpid() % 1000}{user}{len(rt)}.5"
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "run", "--root", str(store.root), "--rm",
                             "--runtime", rt, "-u", user, "busybox", "sleep", marker],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not procs_with(f"sleep {marker}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs_with(f"sleep {marker}"), "the container did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 2
        while procs_with(f"sleep {marker}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs_with(f"sleep {marker}") == [], "the container outlived the soko that ran it"
    finally:
        proc.kill()
        subprocess.run([sys.executable, "-m", "runtime", "sweep", "--root", str(store.root)], cwd=REPO)
    assert container_dirs(store.root) == []


def test_kept_container_stays_and_is_not_swept(store):
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        assert run(store, "busybox", RunOptions(name="keeper", command=["sh", "-c", "echo hi > /kept"]),
                   stdout=devnull) == 0
        ids = container_dirs(store.root)
        assert len(ids) == 1
        d = store.root / "containers" / ids[0]
        st = json.loads((d / "state.json").read_text())
        assert st["status"] == "exited" and st["exit_code"] == 0
        assert [tuple(r) for r in store.db.query("SELECT id, name FROM containers")] == [(ids[0], "keeper")]
        assert (d / "upper" / "kept").read_text() == "hi\n"
        with pytest.raises(ContainerError) as e:
            run(store, "busybox", RunOptions(name="keeper", command=["true"]), stdout=devnull)
        assert "already in use" in str(e.value) and e.value.status == 125
        assert run(store, "busybox", RunOptions(rm=True, command=["true"]), stdout=devnull) == 0
        assert container_dirs(store.root) == ids
    finally:
        os.close(devnull)


@pytest.fixture
def v2_hierarchy(tmp_path):
    """The host's cgroup v2 tree; on a host without one mounted (pure v1), a cgroup2 mount made
    for the test, so the test runs everywhere instead of skipping."""
    from runtime import cgroups
    from runtime import syscalls as sc

    real = cgroups.system()
    if real.v2 is not None:
        yield real.v2
        return
    mnt = tmp_path / "unified"
    mnt.mkdir()
    sc.mount("cgroup2", str(mnt), "cgroup2", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    try:
        own = next(line.split(":", 2)[2].strip() for line in open("/proc/self/cgroup") if line.startswith("0::"))
        yield cgroups.Hierarchy(2, str(mnt), frozenset((mnt / "cgroup.controllers").read_text().split()), own)
    finally:
        sc.umount2(str(mnt), sc.MNT_DETACH)


def test_cgroup_v2_path_on_the_v2_tree_of_this_host(store, v2_hierarchy):
    """The pure-v2 code path (cgroup.procs, cgroup namespace, cgroup2 mount, /soko/<id> at the
    root) exercised on the host's real v2 hierarchy, without its v1 controllers. On a pure v2
    machine every other test takes this path anyway."""
    from runtime import cgroups

    real = cgroups.system()
    v2 = v2_hierarchy
    cgroups._system = cgroups.System([cgroups.Hierarchy(2, v2.mount, v2.controllers, v2.own)])
    try:
        out: list[bytes] = []
        created: list[str] = []
        status = run(store, "busybox", RunOptions(
            rm=True, network="none", pids_limit=20 if "pids" in v2.controllers else None,
            command=["sh", "-c", "grep '^0::' /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/self/mountinfo; "
                                 "ls /sys/fs/cgroup/cgroup.procs"]), on_output=out.append,
            on_event=lambda what, cid: created.append(cid) if what == "created" else None)
        text = b"".join(out).decode()
        assert status == 0, text
        lines = text.splitlines()
        assert lines[0] == "0::/"  # its own cgroup namespace
        assert " cgroup2 " in lines[1] and " ro," in lines[1]
        # its cgroup went with it (only its own: other runs on this host have theirs under /soko too)
        assert len(created) == 1 and len(created[0]) == 64
        assert os.path.isdir(os.path.join(v2.mount, "soko")) and not os.path.exists(os.path.join(v2.mount, "soko", created[0]))
    finally:
        cgroups._system = real


def test_orphaned_empty_cgroups_are_swept_and_live_ones_kept():
    """Cgroups whose container record vanished (its store deleted, say) go; busy ones stay."""
    from runtime import cgroups

    empty_id, busy_id = os.urandom(32).hex(), os.urandom(32).hex()
    empty = cgroups.create(empty_id, cgroups.Resources())
    busy = cgroups.create(busy_id, cgroups.Resources())
    proc = subprocess.Popen(["sleep", "30"])
    try:
        for p in busy.paths:
            with open(f"{p}/cgroup.procs", "w") as f:
                f.write(str(proc.pid))
        cgroups.sweep_orphans(min_age=3600)
        assert all(os.path.isdir(p) for p in empty.paths)  # too young to judge
        cgroups.sweep_orphans(min_age=0)
        assert not any(os.path.isdir(p) for p in empty.paths)
        assert all(os.path.isdir(p) for p in busy.paths)
    finally:
        proc.kill()
        proc.wait()
        cgroups.destroy(busy)
        cgroups.destroy(empty)
