"""Where archives are written: `save -o`, `build --output` and `copy ...-archive:`
replace regular files whole through an unpredictable temporary name, write
devices, FIFOs, pipes and /dev/stdout straight through without replacing
them, and never follow what another user planted in a sticky directory."""
from __future__ import annotations

import os
import pty
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.conftest import need_root

from .test_store_private import NOBODY


def popen(soko, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), *map(str, args)],
                            env=soko.env, **kw)


def names(tar_bytes_or_path) -> list[str]:
    with tarfile.open(tar_bytes_or_path) as t:
        return t.getnames()


@pytest.fixture
def bb(soko, busybox_rootfs):
    soko("import", busybox_rootfs, "bb:1")
    return "bb:1"


@pytest.fixture
def sticky():
    """A 1777 directory as /tmp is, inside a directory uid 65534 can traverse."""
    need_root()
    base = Path(tempfile.mkdtemp(prefix="soko-sticky-", dir="/tmp"))
    os.chmod(base, 0o755)
    d = base / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(base, ignore_errors=True)


def test_planted_names_in_a_sticky_dir_are_not_followed(soko, bb, sticky):
    victim = sticky.parent / "victim"
    victim.write_bytes(b"precious")
    plant = subprocess.run([*NOBODY, "sh", "-c", f"cd {sticky} && ln -s {victim} .out.tar.tmp && "
                            f"ln -s {victim} out2.tar && mkfifo out3.tar"], capture_output=True, text=True)
    assert plant.returncode == 0, plant.stderr
    soko("save", "-o", sticky / "out.tar", bb)
    assert victim.read_bytes() == b"precious"
    out = sticky / "out.tar"
    assert stat.S_ISREG(os.lstat(out).st_mode) and os.lstat(out).st_uid == 0
    assert "manifest.json" in names(out)
    assert os.readlink(sticky / ".out.tar.tmp") == str(victim)  # left as planted
    for planted in ("out2.tar", "out3.tar"):  # another user's symlink or FIFO: refused, not followed
        r = soko("save", "-o", sticky / planted, bb, check=False)
        assert r.returncode == 1 and "another user" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in sticky.iterdir()) == [".out.tar.tmp", "out.tar", "out2.tar", "out3.tar"]


def test_dev_null_and_dev_stdout_are_written_through(soko, bb, tmp_path):
    """In a mount namespace with a private /dev, so a broken soko cannot clobber the host's."""
    need_root()
    script = f"""
set -e
mount -t tmpfs -o mode=755 soko-test-dev /dev
mknod -m 666 /dev/null c 1 3
ln -s /proc/self/fd/1 /dev/stdout
soko() {{ {sys.executable} -m soko --root {soko.root} "$@"; }}
soko save -o /dev/null {bb}
stat -c %F /dev/null
soko save -o /dev/stdout {bb} | tar t | grep -c manifest.json
soko save -o /dev/stdout {bb} > {tmp_path}/via-stdout.tar
stat -c %F /dev/stdout
ls -A /dev
"""
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, env=soko.env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["character special file", "1", "symbolic link", "null", "stdout"]
    assert "manifest.json" in names(tmp_path / "via-stdout.tar")


@pytest.mark.parametrize("how", ["save", "copy", "build"])
def test_archive_into_a_fifo_read_by_cat(soko, bb, tmp_path, how):
    need_root()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = tmp_path / "got.tar"
    with open(got, "wb") as out:
        cat = subprocess.Popen(["cat", str(fifo)], stdout=out)
        try:
            if how == "save":
                soko("save", "--format", "oci", "-o", fifo, bb)
            elif how == "copy":
                soko("copy", f"soko:{bb}", f"docker-archive:{fifo}")
            else:
                ctx = tmp_path / "ctx"
                ctx.mkdir()
                (ctx / "Dockerfile").write_text(f"FROM {bb}\nENV X=1\n")
                soko("build", "--output", f"type=oci,dest={fifo}", ctx)
            assert cat.wait(timeout=60) == 0
        finally:
            cat.kill()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert "index.json" in names(got)


def test_save_streams_to_stdout_but_not_to_a_terminal(soko, bb):
    for args in ([], ["-o", "-"]):
        save = popen(soko, "save", *args, bb, stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "t"], stdin=save.stdout, capture_output=True, text=True)
        save.stdout.close()
        assert save.wait(timeout=60) == 0 and tar.returncode == 0, tar.stderr
        assert "manifest.json" in tar.stdout.split()
    master, slave = pty.openpty()
    try:
        p = popen(soko, "save", bb, stdout=slave, stderr=subprocess.PIPE)
        err = p.communicate(timeout=60)[1].decode()
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 1
    assert err.strip() == "soko: cowardly refusing to save to a terminal. Use the -o flag or redirect"


def test_a_failed_save_leaves_the_old_file(soko, bb, tmp_path):
    """The file is kept, no temporary is left, and the error is one line (the
    abandoned tar stream used to print a traceback when collected)."""
    x = tmp_path / "x.tar"
    x.write_bytes(b"old archive")
    layer = next(p for p in (soko.root / "blobs" / "sha256").iterdir() if p.stat().st_size > 100_000)
    layer.rename(tmp_path / "hidden")
    r = soko("save", "-o", x, bb, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert x.read_bytes() == b"old archive"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == ["hidden", "x.tar"]
