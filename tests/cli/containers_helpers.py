"""Helpers for the container-verb tests: a busybox image, waiting, and checking that nothing is left."""
from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import time

import pytest

from tests.conftest import need_root


@pytest.fixture
def bb(soko, busybox_rootfs):
    """A busybox image; the containers a test leaves are removed after it (a failed test too)."""
    need_root()
    soko("import", "--change", 'CMD ["/bin/sh"]', busybox_rootfs, "bb:c")
    yield "bb:c"
    left = soko("ps", "-aq", "--no-trunc", check=False).stdout.split()
    if left:
        soko("rm", "-f", *left, check=False)


def marker() -> str:
    """A number no other test run on the machine uses, to find a test's own processes by."""
    return str(int.from_bytes(os.urandom(4), "big") % 10**8 + 10**8)


def wait_until(check, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """Poll `check()` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inspect(soko, name: str) -> dict:
    return json.loads(soko("inspect", "--type", "container", name).stdout)[0]


def state(soko, name: str) -> dict:
    return inspect(soko, name)["State"]


def cgroups_of(ids) -> list[str]:
    ids = set(ids)
    return [p for p in glob.glob("/sys/fs/cgroup/**/soko/*", recursive=True)
            if os.path.basename(p) in ids and os.path.isdir(p)]


def mounts_mentioning(text: str) -> list[str]:
    """Mounts naming `text` in any mount namespace of a living process (containers' included)."""
    found = []
    for mi in glob.glob("/proc/[0-9]*/mountinfo"):
        try:
            with open(mi) as f:
                found += [f"{mi}: {line.strip()}" for line in f if text in line]
        except OSError:
            continue
    return found


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ewwo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if text in line and int(line.split()[0]) != os.getpid()]


def assert_nothing_left(soko, ids, markers=()) -> None:
    """After every container is removed: no process, cgroup, mount, record, snapshot dir or
    runc state of theirs (checked, not assumed)."""
    root = str(soko.root)
    assert soko("ps", "-aq").stdout == ""
    # monitors name the container directory (a runc watcher may take a second to finish its deletes)
    for text in [root, *markers]:
        try:
            wait_until(lambda: not processes_mentioning(text), timeout=5, what=f"processes of {text} to end")
        except AssertionError:
            assert processes_mentioning(text) == []
    assert cgroups_of(ids) == []
    assert mounts_mentioning(root) == []
    cdir = soko.root / "containers"
    assert [n for n in os.listdir(cdir) if n != ".lock"] == [] if cdir.exists() else True
    assert glob.glob(f"{root}/**/upper", recursive=True) == []
    for cid in ids:
        assert not os.path.exists(f"/run/soko/runc/soko-{cid[:32]}")
