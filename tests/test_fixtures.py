"""The base-rootfs recipes in fixtures/: reproducible bytes, expected contents, a working shell."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, need_root

sys.path.insert(0, str(REPO / "fixtures"))
import recipes  # noqa: E402  (fixtures/recipes.py)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_busybox_rootfs_is_byte_identical_across_builds(tmp_path: Path, busybox_rootfs: Path):
    a = recipes.busybox_rootfs(tmp_path / "a" / "rootfs.tar")
    b = recipes.busybox_rootfs(tmp_path / "b" / "rootfs.tar")
    assert a != b
    assert sha256(a) == sha256(b) == sha256(busybox_rootfs)


def test_busybox_rootfs_is_reused_until_the_output_is_damaged(tmp_path: Path):
    out = recipes.busybox_rootfs(tmp_path / "rootfs.tar")
    good = sha256(out)
    inode = out.stat().st_ino
    assert recipes.busybox_rootfs(out).stat().st_ino == inode, "rebuilt although nothing changed"

    with open(out, "r+b") as f:  # damage it in place: same inode, wrong bytes
        f.seek(4096)
        f.write(b"\0garbage\0")
    recipes.busybox_rootfs(out)
    assert sha256(out) == good
    assert out.stat().st_ino != inode, "damaged output was not replaced"


def test_busybox_rootfs_rebuilds_when_the_binary_changes(tmp_path: Path):
    fake = tmp_path / "busybox"
    fake.write_bytes(recipes.BUSYBOX.read_bytes())
    fake.chmod(0o755)
    out = recipes.busybox_rootfs(tmp_path / "rootfs.tar", busybox=fake)
    first = sha256(out)
    with open(fake, "ab") as f:  # still runs; different bytes
        f.write(b"\0")
    assert sha256(recipes.busybox_rootfs(out, busybox=fake)) != first


def test_busybox_rootfs_missing_binary_is_a_clear_error(tmp_path: Path):
    out = tmp_path / "rootfs.tar"
    with pytest.raises(recipes.RecipeError, match="busybox-static"):
        recipes.busybox_rootfs(out, busybox=tmp_path / "nope")
    assert not out.exists()


def test_busybox_rootfs_contents(busybox_rootfs: Path):
    with tarfile.open(busybox_rootfs) as tar:
        members = {m.name: m for m in tar.getmembers()}
        passwd = tar.extractfile("etc/passwd").read().decode()
        group = tar.extractfile("etc/group").read().decode()

    names = list(members)
    assert names == sorted(names, key=lambda n: n.split("/")), "entries not in sorted order"
    for applet in ("sh", "echo", "cat", "ls", "id", "sleep", "true", "false", "hostname"):
        m = members[f"bin/{applet}"]
        assert m.issym() and m.linkname == "busybox"
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/busybox"].size == recipes.BUSYBOX.stat().st_size
    for d in ("dev", "proc", "sys", "root", "home/app", "etc", "tmp"):
        assert members[d].isdir()
    assert members["tmp"].mode == 0o1777
    assert (members["home/app"].uid, members["home/app"].gid) == (1000, 1000)
    assert not any(m.isdev() for m in members.values())
    for m in members.values():
        assert m.mtime == recipes.BUSYBOX_MTIME and m.uname == "" and m.gname == ""
        if m.name != "home/app":
            assert (m.uid, m.gid) == (0, 0), m.name

    assert "root:x:0:0:" in passwd
    assert "app:x:1000:1000:app:/home/app:/bin/sh" in passwd
    assert "nobody:x:65534:65534:" in passwd
    assert "staff:x:50:app" in group.splitlines()
    assert "nogroup:x:65534:" in group.splitlines()


def test_busybox_rootfs_runs_under_chroot(tmp_path: Path, busybox_rootfs: Path):
    need_root()
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(busybox_rootfs), "-C", str(root)], check=True)
    p = subprocess.run(["chroot", str(root), "/bin/echo", "hi"], capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr
    p = subprocess.run(["chroot", str(root), "/bin/id", "app"], capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "uid=1000(app) gid=1000(app) groups=1000(app),50(staff)", p.stderr


def test_cli_prints_the_path(tmp_path: Path):
    out = tmp_path / "cli.tar"
    p = subprocess.run([sys.executable, str(REPO / "fixtures/recipes.py"), "busybox", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, f"{out}\n"), p.stderr
    assert out.is_file()


# Mirror discovery for bookworm_rootfs (debootstrap itself is too slow for this file).

def test_apt_mirror_from_deb822_sources(tmp_path: Path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "00-other.sources").write_text(
        "Types: deb\nURIs: http://example.invalid/other\nSuites: nodistro\nComponents: main\n")
    (d / "debian.sources").write_text(
        "# a comment\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb\n# comment inside\nURIs: http://mirror.invalid/debian/\n  http://second.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n\n"
        "Types: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (d / "ignored.list.disabled").write_text("deb http://disabled.invalid/debian bookworm main\n")
    assert recipes.apt_mirror(etc_apt=tmp_path) == "http://mirror.invalid/debian"


def test_apt_mirror_from_one_line_sources(tmp_path: Path):
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://mirror.invalid/debian bookworm main non-free\n")
    assert recipes.apt_mirror(etc_apt=tmp_path) == "https://mirror.invalid/debian"


def test_apt_mirror_absent_is_a_clear_error(tmp_path: Path):
    (tmp_path / "sources.list").write_text("deb http://mirror.invalid/debian bullseye main\n")
    with pytest.raises(recipes.RecipeError, match="SOKO_DEBIAN_MIRROR"):
        recipes.apt_mirror(etc_apt=tmp_path)


def test_apt_mirror_of_this_machine_exists():
    """The machine the tests run on must be able to build the bookworm fixture."""
    if os.environ.get("SOKO_DEBIAN_MIRROR"):
        pytest.skip("mirror given explicitly")
    assert recipes.apt_mirror().startswith(("http://", "https://", "file:/"))
