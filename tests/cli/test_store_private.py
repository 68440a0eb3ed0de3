"""Host users vs the store: after a run, a build and a push to `soko serve`,
another uid (a real one, through setpriv) can neither stat nor execute
anything under the store, though the image holds a setuid-root shell and a
world-writable device node; containers running as a non-root user still
work under both executors. Modes are right for a fresh store and an old
0755 store is tightened on open."""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.conftest import SokoCLI, need_root
from tests.interop.tools import need_tool

from .test_serve_cli import start

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

# Run as uid 65534: try every path given on stdin; print those it could lstat.
PROBE = r"""
import os, sys
for p in sys.stdin.read().splitlines():
    try:
        os.lstat(p)
    except OSError:
        continue
    print(p)
"""


@pytest.fixture
def open_base():
    """A directory other users can traverse (pytest's tmp dirs are root's alone),
    so that only the store's own modes stand between them and its files."""
    need_root()
    need_tool("setpriv")
    base = Path(tempfile.mkdtemp(prefix="soko-private-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def hostile_rootfs(busybox_rootfs: Path, out: Path) -> Path:
    """The busybox rootfs plus a setuid-root copy of the shell and a 0666 char device."""
    with tarfile.open(busybox_rootfs) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        data = src.extractfile("bin/busybox").read()
        suid = tarfile.TarInfo("bin/suid-sh")
        suid.size, suid.mode, suid.uid, suid.gid = len(data), 0o4755, 0, 0
        dst.addfile(suid, io.BytesIO(data))
        dev = tarfile.TarInfo("bin/open-null")
        dev.type, dev.mode, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 0o666, 1, 3
        dst.addfile(dev)
    return out


def as_nobody(*argv: str, input: str | None = None) -> subprocess.CompletedProcess:
    """`argv` as uid 65534, exec-ed by a shell that already runs as that user:
    setpriv itself execs with root's capabilities still in effect."""
    return subprocess.run([*NOBODY, "sh", "-c", 'exec "$@"', "sh", *argv], input=input, capture_output=True,
                          text=True, timeout=60)


def reachable(root: Path) -> list[str]:
    """Everything under `root` (root itself excluded) that uid 65534 can lstat."""
    paths = [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files]
    assert len(paths) > 50, "the store should hold snapshots, blobs and registry data by now"
    r = as_nobody("/usr/bin/python3", "-c", PROBE, input="\n".join(paths))  # the venv is not theirs
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def modes(root: Path, names: list[str]) -> dict[str, str]:
    return {n: oct(stat.S_IMODE(os.stat(root / n).st_mode)) for n in names}


def test_other_users_cannot_reach_the_store(open_base, busybox_rootfs):
    root = open_base / "store"
    soko = SokoCLI(root)
    soko("import", "--change", 'CMD ["/bin/sh"]', hostile_rootfs(busybox_rootfs, open_base / "evil.tar"), "evil:1")
    assert soko("run", "--rm", "--network", "none", "evil:1", "sh", "-c",
                "stat -c %a /bin/suid-sh /bin/open-null").stdout.split() == ["4755", "666"]
    soko("run", "--name", "kept", "--network", "none", "evil:1", "true")  # keeps its state and upper dir
    ctx = open_base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM evil:1\nRUN echo built > /built\n")
    soko("build", "--network", "none", "-t", "evil:2", ctx)
    p, url = start(root, "--addr", "127.0.0.1:0")
    try:
        soko("push", "evil:1", f"{url.split('//')[1]}/team/evil:1")
    finally:
        p.terminate()
        p.wait(timeout=20)
    snap = next(s for s in (root / "snapshots").iterdir() if (s / "bin" / "suid-sh").exists())
    suid = snap / "bin" / "suid-sh"
    assert os.stat(suid).st_mode & stat.S_ISUID and stat.S_ISCHR(os.lstat(snap / "bin" / "open-null").st_mode)

    leaked = reachable(root)
    assert not leaked, leaked[:10]
    r = as_nobody(str(suid), "-c", "id -u")
    assert r.returncode == 126 and "Permission denied" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = as_nobody("sh", "-c", f"echo x > {snap}/bin/open-null")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert as_nobody("ls", str(root)).returncode != 0
    assert modes(root, [".", "snapshots", "containers", "builder", "registry", "blobs", "ingest"]) == \
        dict.fromkeys([".", "snapshots", "containers", "builder", "registry", "blobs", "ingest"], "0o700")


def test_old_store_is_tightened_on_open(open_base, busybox_rootfs):
    root = open_base / "old"
    soko = SokoCLI(root)
    soko("import", busybox_rootfs, "bb:1")
    soko("run", "--rm", "--network", "none", "bb:1", "true")
    old = [".", "snapshots", "blobs", "ingest", "containers"]
    for n in old:  # as soko made them before it kept stores private
        os.chmod(root / n, 0o755)
    assert as_nobody("ls", str(root / "snapshots")).returncode == 0
    soko("images")
    assert modes(root, old) == dict.fromkeys(old, "0o700")
    leaked = reachable(root)
    assert not leaked, leaked[:10]


def test_fresh_store_modes_ignore_umask(open_base, busybox_rootfs):
    """Private from mkdir on, whatever the umask (a loose one adds nothing, a
    strict one takes nothing the owner needs); missing parents are made private too."""
    for umask in (0o000, 0o277):
        root = open_base / f"umask-{umask:o}" / "nested" / "store"
        soko = SokoCLI(root)
        p = subprocess.run([sys.executable, "-m", "soko", "--root", str(root), "import", str(busybox_rootfs),
                            "bb:1"], env=soko.env, capture_output=True, text=True, timeout=120,
                           preexec_fn=lambda: os.umask(umask))
        assert p.returncode == 0, p.stderr
        names = [".", "..", "blobs", "ingest"]
        assert modes(root, names) == dict.fromkeys(names, "0o700"), umask


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_non_root_user_runs_in_a_private_store(open_base, busybox_rootfs, rt):
    """Nothing a container's user does needs a host path under the store:
    the root, bind-mounted /etc files and a named volume all work for uid
    65534 though the store is 0700."""
    root = open_base / "store"
    soko = SokoCLI(root)
    soko("import", busybox_rootfs, "bb:1")
    soko("run", "--rm", "--runtime", rt, "--network", "none", "-v", "vol:/data", "bb:1",
         "sh", "-c", "echo seeded > /data/f; chmod 755 /data")
    assert oct(stat.S_IMODE(os.stat(root).st_mode)) == "0o700"
    r = soko("run", "--rm", "--runtime", rt, "--network", "none", "-u", "65534:65534", "-w", "/tmp",
             "-v", "vol:/data:ro", "bb:1", "sh", "-c", "id -u; cat /data/f; cat /etc/hostname >/dev/null && "
             "echo etc-ok; ls /bin/busybox; echo x > /tmp/t && cat /tmp/t")
    assert r.stdout.split() == ["65534", "seeded", "etc-ok", "/bin/busybox", "x"], r.stderr
    ctx = open_base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb:1\nUSER 65534\nRUN id -u > /tmp/who && cat /tmp/who\n")
    assert "65534" in soko("build", "--network", "none", "--progress", "plain", ctx).stdout
