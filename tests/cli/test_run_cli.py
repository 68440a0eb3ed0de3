"""`soko run` through the real command: output, exit statuses, snapshots freed by gc."""
from __future__ import annotations

import pytest

from tests.conftest import need_root


@pytest.fixture
def bb(soko, busybox_rootfs):
    need_root()
    soko("import", "--change", 'CMD ["/bin/sh"]', busybox_rootfs, "bb:run")
    return "bb:run"


def test_run_prints_and_propagates_status(soko, bb):
    r = soko("run", "--rm", "--network", "none", "-e", "X=42", bb, "sh", "-c", "echo hi $X; hostname; exit 42",
             check=False)
    assert r.returncode == 42
    lines = r.stdout.splitlines()
    assert lines[0] == "hi 42"
    r = soko("run", "--rm", "-h", "box", "-u", "app", "-w", "/tmp/new", bb, "sh", "-c", "hostname; id -un; pwd")
    assert r.stdout.split() == ["box", "app", "/tmp/new"]


def test_run_errors(soko, bb):
    r = soko("run", "--rm", "--pull", "never", "nosuch:image", check=False)
    assert r.returncode == 125 and r.stderr.strip() == "soko: no such image: nosuch:image"
    assert soko("run", "--rm", bb, "/nonexistent", check=False).returncode == 127
    assert soko("run", "--rm", bb, "/etc/passwd", check=False).returncode == 126
    r = soko("run", "--rm", "-u", "ghost", bb, "true", check=False)
    assert r.returncode == 125 and "ghost" in r.stderr


def test_gc_prunes_snapshots(soko, bb):
    soko("run", "--rm", bb, "true")
    snaps = soko.root / "snapshots"
    assert snaps.is_dir() and any(snaps.iterdir())
    soko("rmi", bb)
    out = soko("gc", "--grace", "0").stdout
    assert "1 snapshots" in out
