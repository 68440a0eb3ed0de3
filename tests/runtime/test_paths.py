"""Container-root paths resolved through storage.pathwalk: what the runtime makes
or removes for a mount target stays inside the container's root or upper dir."""
from __future__ import annotations

import os

from runtime import stubs
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


def test_stub_cleanup_follows_a_hostile_link_only_inside_the_upper_dir(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"")  # empty, like a stub: a walk that leaves `upper` would delete it
    os.symlink("/nonexistent" + "/.." * 32 + str(victim), lower / "etc/hosts")
    # where the runtime made the /etc/hosts stub: the link resolved inside the root
    stub = upper / str(victim).lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_bytes(b"")
    (upper / "nonexistent").mkdir()  # the step's command made it: `..` from there would climb out of upper
    (upper / "nonexistent/kept").write_text("x")
    stubs.remove(upper, LayerView([str(lower)]), ["/etc/hosts"])
    assert victim.exists()
    assert not stub.exists()
    assert sorted(upper.iterdir()) == [upper / "nonexistent"]  # the stub's parents went, the step's dir stayed
