"""Container-root paths resolved through storage.pathwalk: what the runtime makes
or removes for a mount target stays inside the container's root or upper dir."""
from __future__ import annotations

import os

from runtime import initlayer
from runtime.layerview import LayerView
from runtime.paths import mkdir_in_root, secure_join


def test_a_dotdot_back_from_a_missing_directory_resolves_symlinks_again(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink("/real", root / "abs")
    r = str(root)
    # as `mkdir -p` then the kernel would: /none is made, `..` leads back, abs is followed
    assert secure_join(r, "/none/../abs/x") == f"{r}/real/x"
    assert mkdir_in_root(r, "/none/../abs/made") == f"{r}/real/made" and (root / "real/made").is_dir()
    assert not (root / "abs").is_dir() or (root / "abs").is_symlink()


def test_init_layer_follows_a_hostile_link_only_inside_the_init_dir(tmp_path):
    lower, init = tmp_path / "lower", tmp_path / "init"
    (lower / "etc").mkdir(parents=True)
    victim = tmp_path / "victim" / "hosts"  # a walk that leaves the root would create it on the host
    os.symlink("/nonexistent" + "/.." * 32 + str(victim), lower / "etc/hosts")
    initlayer.make(init, LayerView([str(lower)]), [("/etc/hosts", False), ("/proc", True)])
    assert not victim.parent.exists()
    # where the runtime mounts /etc/hosts: the link resolved inside the root
    assert (init / str(victim).lstrip("/")).is_file()
    assert (init / "proc").is_dir()
    assert not (init / "etc").exists()  # the image has /etc: nothing to make there


def test_mount_targets_already_there_are_used_as_found(tmp_path):
    """ensure_target's short way for a target the root has (most of a container's): the same
    answers as making it would give, and a file still cannot stand for a directory."""
    import pytest

    from runtime.errors import UnsafePath
    from runtime.paths import ensure_target

    root = tmp_path / "root"
    (root / "real/dir").mkdir(parents=True)
    (root / "real/file").write_text("x")
    os.symlink("/real", root / "abs")
    r = str(root)
    before = sorted(p.name for p in root.rglob("*"))
    assert ensure_target(r, "/abs/dir", True) == f"{r}/real/dir"
    assert ensure_target(r, "/abs/file", False) == f"{r}/real/file"
    assert ensure_target(r, "/abs/dir", False) == f"{r}/real/dir"  # as O_EXCL finding it: the mount decides
    assert sorted(p.name for p in root.rglob("*")) == before and (root / "real/file").read_text() == "x"
    with pytest.raises(UnsafePath):
        ensure_target(r, "/abs/file", True)
    assert ensure_target(r, "/abs/new/sub", True) == f"{r}/real/new/sub" and (root / "real/new/sub").is_dir()
