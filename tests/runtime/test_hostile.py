"""Hostile images: symlinks meant to reach host files resolve inside the container root."""
from __future__ import annotations

import os

import pytest

from .conftest import run_cli
from tests.tarballs import make_tar

from .helpers import add_image

RUNTIMES = ["builtin", "runc"]


@pytest.fixture
def hostile(store, tmp_path):
    """An image whose /etc/passwd, /wd and /mnt point at host paths, with bait on the host."""
    host = tmp_path / "hostside"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "passwd").write_text("evil:x:0:0:evil:/:/bin/sh\n")
    (host / "wd").mkdir()
    (host / "mnt").mkdir()
    escape = "../" * 12
    base = store.blobs.read_bytes(store.resolve("busybox").manifest.layers[0].digest)
    evil = make_tar([
        ("symlink", "etc/passwd", f"{escape}{str(host).lstrip('/')}/etc/passwd"),
        ("symlink", "wd", f"/../../..{host}/wd"),
        ("symlink", "mnt", f"{escape}{str(host).lstrip('/')}/mnt"),
    ])
    add_image(store, [base, evil], {"Cmd": ["sh"]}, tag="evil")
    inside = make_tar([
        ("dir", "inside"),
        ("file", "inside/passwd", "inside:x:1234:1234:in:/:/bin/sh\n"),
        ("symlink", "etc/passwd", "/inside/passwd"),
    ])
    add_image(store, [base, inside], {"Cmd": ["sh"]}, tag="inside")
    return host


def test_passwd_symlink_out_of_the_root_is_not_followed_to_the_host(store, hostile):
    p = run_cli(store.root, "--rm", "-u", "evil", "evil", "id")
    assert p.returncode == 125 and b"unable to find user evil" in p.stderr


def test_absolute_passwd_symlink_resolves_inside(store, hostile):
    p = run_cli(store.root, "--rm", "-u", "inside", "inside", "id", "-u")
    assert p.stdout.decode().strip() == "1234", p.stderr


@pytest.mark.parametrize("rt", RUNTIMES)
def test_workdir_symlink_stays_inside(store, hostile, rt):
    p = run_cli(store.root, "--rm", "--runtime", rt, "-w", "/wd/sub", "evil", "sh", "-c", "pwd -P; touch f")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().strip() == f"{hostile}/wd/sub"  # the same path, but in the container
    assert os.listdir(hostile / "wd") == []


@pytest.mark.parametrize("rt", RUNTIMES)
def test_volume_target_symlink_stays_inside(store, hostile, rt, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("from-volume")
    p = run_cli(store.root, "--rm", "--runtime", rt, "-v", f"{src}:/mnt/x", "-v", "named1:/mnt/y",
                "evil", "sh", "-c", f"cat {hostile}/mnt/x/file; ls -d {hostile}/mnt/y")
    assert p.returncode == 0, p.stderr
    assert "from-volume" in p.stdout.decode()
    assert os.listdir(hostile / "mnt") == []
    with open("/proc/self/mountinfo") as f:
        assert str(hostile) not in f.read()


def test_layer_with_escaping_entries_is_refused(store):
    base = store.blobs.read_bytes(store.resolve("busybox").manifest.layers[0].digest)
    add_image(store, [base, make_tar([("file", "../../escape", "x")])], {"Cmd": ["true"]}, tag="escape")
    p = run_cli(store.root, "--rm", "escape")
    assert p.returncode == 125
    assert not any(n.startswith(".unpack-") for n in os.listdir(store.root / "snapshots"))
