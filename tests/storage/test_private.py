"""Private directories: created 0700, stores tightened on open, other directories left alone."""
from __future__ import annotations

import os
import stat

import pytest

from storage.images import ImageStore
from storage.private import open_root, private_dir


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_private_dir_makes_every_missing_parent_private(tmp_path):
    base = tmp_path / "b"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    old = os.umask(0)
    try:
        private_dir(base / "x" / "y" / "z")
    finally:
        os.umask(old)
    assert [mode(base / p) for p in ("x", "x/y", "x/y/z")] == [0o700] * 3
    assert mode(base) == 0o755  # existing directories are not private_dir's business
    private_dir(base / "x" / "y" / "z")  # idempotent
    (base / "file").write_text("")
    with pytest.raises(FileExistsError):
        private_dir(base / "file")


def test_open_root_tightens_a_store_and_what_is_directly_in_it(tmp_path):
    root = tmp_path / "store"
    ImageStore(root)
    assert mode(root) == 0o700
    for p in (root, root / "blobs", root / "ingest"):
        os.chmod(p, 0o755)
    (root / "blobs" / "sha256").mkdir(exist_ok=True)
    os.chmod(root / "blobs" / "sha256", 0o755)
    ImageStore(root)
    assert [mode(root / p) for p in (".", "blobs", "ingest")] == [0o700] * 3
    assert mode(root / "blobs" / "sha256") == 0o755  # out of reach already


def test_open_root_leaves_a_directory_that_is_not_a_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / ".profile").write_text("")
    (home / "public").mkdir()
    os.chmod(home / "public", 0o755)
    open_root(home)
    ImageStore(home)
    assert mode(home) == 0o755 and mode(home / "public") == 0o755
    assert mode(home / "blobs") == 0o700 and mode(home / "ingest") == 0o700
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o755)
    open_root(empty)
    assert mode(empty) == 0o700
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    ImageStore(shared)
    ImageStore(shared)  # a store now, but still a sticky directory others use
    assert mode(shared) == 0o1777 and mode(shared / "blobs") == 0o700
