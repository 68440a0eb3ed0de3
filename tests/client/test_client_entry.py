"""The temporary `python -m registry.client` entry: exit codes and one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

from storage.images import ImageStore
from tests.client.client_helpers import busybox_layer, make_image
from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry.client", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def test_push_pull_copy_through_the_entry(registry, tmp_path, repo_name):
    store = ImageStore(tmp_path / "a")
    m = make_image(store, "entry/img:1", [busybox_layer(store)])
    ref = f"{registry.host}/{repo_name}:1"
    p = run("--root", str(tmp_path / "a"), "push", "entry/img:1", ref)
    assert p.returncode == 0, p.stderr
    assert m.digest in p.stdout
    p = run("--root", str(tmp_path / "b"), "pull", ref)
    assert p.returncode == 0, p.stderr
    assert ImageStore(tmp_path / "b").resolve(ref).digest == m.digest
    p = run("--root", str(tmp_path / "b"), "copy", f"soko:{ref}", f"oci-archive:{tmp_path / 'x.tar'}")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "x.tar").stat().st_size > 0


def test_errors_are_one_line_with_status_1(registry, tmp_path, repo_name):
    p = run("--root", str(tmp_path / "c"), "pull", f"{registry.host}/{repo_name}:missing")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not found" in lines[0]
    p = run("--root", str(tmp_path / "c"), "copy", "ftp://x", "soko:y")
    assert p.returncode == 1 and "unknown transport" in p.stderr
