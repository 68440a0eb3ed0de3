"""system df/prune, image prune, volume create/ls/inspect/rm/prune, version, info, completion."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from tests.conftest import need_root


@pytest.fixture
def bb(soko, busybox_rootfs):
    return soko("import", busybox_rootfs, "bb:1").stdout.strip()


def blobs(root) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def test_image_prune_asks_then_removes_dangling_images_and_their_blobs(soko, bb, busybox_rootfs):
    dangling = soko("import", "--change", "ENV X=1", busybox_rootfs).stdout.strip()
    before = blobs(soko.root)
    r = soko("image", "prune", input="n\n")
    assert r.stdout.startswith("WARNING! This will remove all dangling images.\n"
                               "Are you sure you want to continue? [y/N] ")
    assert r.stdout.endswith("Total reclaimed space: 0B\n")
    assert blobs(soko.root) == before and dangling[7:19] in soko("images", "-q").stdout
    out = soko("image", "prune", input="y\n").stdout
    assert f"Deleted Images:\ndeleted: {dangling}\n" in out
    freed = re.search(r"Total reclaimed space: (\S+)\n$", out).group(1)
    assert freed != "0B"  # its manifest and config (the layer is shared with bb:1)
    assert soko("images", "-q").stdout == f"{bb[7:19]}\n"
    assert dangling[7:] not in blobs(soko.root)  # freed now, not after gc's grace period
    assert soko("image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"  # nothing left to prune
    out = soko("image", "prune", "-a", "-f").stdout
    assert "untagged: bb:1" in out and f"deleted: {bb}" in out
    assert soko("images", "-q").stdout == "" and not blobs(soko.root)


def test_volumes_create_ls_inspect_rm(soko):
    assert soko("volume", "create", "data").stdout == "data\n"
    anon = soko("volume", "create").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anon)
    assert soko("volume", "ls").stdout == ("DRIVER    VOLUME NAME\n" + "".join(
        f"local     {n}\n" for n in sorted([anon, "data"])))
    assert soko("volume", "ls", "-q", "--filter", "name=dat").stdout == "data\n"
    info = json.loads(soko("volume", "inspect", "data").stdout)[0]
    assert list(info) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
    assert info["Mountpoint"] == str(soko.root / "volumes" / "data" / "_data") and info["Driver"] == "local"
    assert soko("volume", "inspect", "-f", "{{.Name}} {{.Scope}}", "data").stdout == "data local\n"
    r = soko("volume", "create", "bad/name", check=False)
    assert r.returncode == 1 and "invalid characters" in r.stderr
    assert soko("volume", "rm", "data").stdout == "data\n"
    r = soko("volume", "rm", "data", check=False)
    assert r.returncode == 1 and "no such volume" in r.stderr
    assert soko("volume", "ls", "-q").stdout == f"{anon}\n"


def test_volume_in_use_is_kept_by_rm_and_prune(soko, bb, tmp_path):
    """A running container's named volume (made by `run -v name:/path`) is in use."""
    need_root()
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [*soko.argv(), "run", "--rm", "--network", "none", "-v", "busy:/data", "-v", f"{tmp_path}:/host",
         "bb:1", "sh", "-c", "echo x > /data/f; touch /host/started; sleep 30"],
        env=soko.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        soko("volume", "create", "idle")
        r = soko("volume", "rm", "busy", check=False)
        assert r.returncode == 1 and "volume is in use" in r.stderr
        out = soko("volume", "prune", "-f").stdout
        assert out == "Deleted Volumes:\nidle\n\nTotal reclaimed space: 0B\n"
        assert soko("volume", "ls", "-q").stdout == "busy\n"
        assert "Local Volumes   1         1" in soko("system", "df").stdout
    finally:
        proc.kill()
        proc.wait()
    for _ in range(50):  # the container's process is gone with soko run; its mounts with it
        if "Deleted Volumes:\nbusy\n" in soko("volume", "prune", "-f").stdout:
            break
        time.sleep(0.2)
    assert soko("volume", "ls", "-q").stdout == ""


def test_system_df_and_prune(soko, bb, busybox_rootfs):
    soko("volume", "create", "v1")
    (soko.root / "volumes" / "v1" / "_data" / "f").write_bytes(b"x" * 1000)
    soko("import", "--change", "ENV X=1", busybox_rootfs)  # dangling
    lines = soko("system", "df").stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert re.fullmatch(r"Images\s+2\s+0\s+1\.984MB\s+1\.984MB \(100%\)", lines[1])  # the shared layer once
    assert re.fullmatch(r"Containers\s+0\s+0\s+0B\s+0B", lines[2])
    assert re.fullmatch(r"Local Volumes\s+1\s+0\s+1kB\s+1kB \(100%\)", lines[3])
    assert lines[4].startswith("Build Cache")
    assert soko("system", "df", "--format", "{{.Type}}={{.TotalCount}}").stdout == \
        "Images=2\nContainers=0\nLocal Volumes=1\nBuild Cache=0\n"
    verbose = soko("system", "df", "-v").stdout
    assert "Images space usage:" in verbose and "Local Volumes space usage:" in verbose
    assert re.search(r"^v1\s+0\s+1kB$", verbose, re.M)
    r = soko("system", "prune", "--volumes", input="n\n")
    assert r.stdout == ("WARNING! This will remove:\n  - all networks not used by at least one container\n"
                        "  - all volumes not used by at least one container\n"
                        "  - all dangling images\n  - all dangling build cache\n\n"
                        "Are you sure you want to continue? [y/N] ")
    assert soko("volume", "ls", "-q").stdout == "v1\n"
    out = soko("system", "prune", "-f").stdout
    assert "Deleted Images:\ndeleted: sha256:" in out and "Deleted Volumes" not in out
    assert soko("images", "-q").stdout == f"{bb[7:19]}\n"
    from soko.render import human_size

    on_disk = sum(p.stat().st_size for p in (soko.root / "blobs" / "sha256").iterdir()) + 1000
    out = soko("system", "prune", "-a", "--volumes", "-f").stdout
    assert "Deleted Volumes:\nv1\n" in out and "untagged: bb:1" in out
    assert out.endswith(f"Total reclaimed space: {human_size(on_disk, 4)}\n")  # what left the disk
    assert soko("images", "-q").stdout == "" and soko("volume", "ls", "-q").stdout == ""


def test_prune_hooks_are_one_line_each():
    """system prune runs each pruner of soko.prune.PRUNERS (Docker's order); container prune
    joins with one line."""
    from soko.prune import PRUNERS

    assert [p.name for p in PRUNERS] == ["networks", "volumes", "images", "build cache"]
    for p in PRUNERS:
        assert callable(p.load())


def test_version_and_info(soko, bb):
    from soko.cli import VERSION

    out = soko("version").stdout
    assert out.splitlines()[1].split() == ["Version:", VERSION]
    assert soko("version", "--format", "{{.Client.Version}}").stdout == f"{VERSION}\n"
    data = json.loads(soko("version", "--format", "{{json .}}").stdout)
    assert data["Server"] is None and data["Client"]["Arch"] in ("amd64", "arm64")
    r = soko("version", "--format", "{{.Server.Version}}", check=False)  # daemonless: as with Docker's daemon down
    assert r.returncode == 1 and "nil pointer evaluating .Server.Version" in r.stderr
    info = soko("info").stdout
    for needle in ("Images: 1", "Containers: 0", f"Store Root Dir: {soko.root}", "Cgroup Version: ",
                   "Runtimes: builtin", " seccomp", "  Profile: default", "Storage Driver: "):
        assert needle in info, needle
    assert re.search(r"^Storage Driver: (overlay|copy)$", info, re.M)
    with open("/proc/self/mountinfo") as f:
        unified = any(line.split()[4] == "/sys/fs/cgroup" and " - cgroup2 " in line for line in f)
    assert f"Cgroup Version: {2 if unified else 1}" in info
    assert soko("info", "-f", "{{.Images}} {{json .SecurityOptions}}").stdout == \
        '1 ["name=seccomp,profile=default"]\n'
    assert soko("system", "info", "-f", "{{.StoreRootDir}}").stdout == f"{soko.root}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_complete_commands(soko, shell, tmp_path):
    script = soko("completion", shell).stdout
    assert "_SOKO_COMPLETE" in script
    if shell == "zsh":
        assert script.startswith("#compdef soko")
        return
    wrapper = tmp_path / "soko"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(soko.argv())} \"$@\"\n")
    wrapper.chmod(0o755)
    (tmp_path / "complete.sh").write_text(script)
    out = subprocess.run(
        ["bash", "-c", f"PATH={tmp_path}:$PATH; source {tmp_path}/complete.sh; "
                       "COMP_WORDS=(soko ima); COMP_CWORD=1; _soko_completion soko; echo ${COMPREPLY[@]}; "
                       "COMPREPLY=(); COMP_WORDS=(soko volume p); COMP_CWORD=2; _soko_completion soko; echo ${COMPREPLY[@]}"],
        capture_output=True, text=True, env={**soko.env, "PATH": os.environ["PATH"]}, timeout=60)
    assert out.stdout.split("\n")[:2] == ["image images", "prune"], out
