"""Fixtures for runtime tests: a store holding a busybox image built here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need_root

from tests.tarballs import tar_of_dir

from .helpers import add_image, busybox_tree

BUSYBOX_CONFIG = {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}


@pytest.fixture(scope="session")
def busybox_layer(tmp_path_factory) -> bytes:
    root = busybox_tree(tmp_path_factory.mktemp("bb") / "root")
    return tar_of_dir(root)


@pytest.fixture
def store(store_root: Path, busybox_layer: bytes):
    need_root()
    from storage.images import ImageStore

    s = ImageStore(store_root)
    add_image(s, [busybox_layer], BUSYBOX_CONFIG, tag="busybox")
    return s


def run_cli(root: Path, *args: str, input: bytes | None = None, timeout: float = 60,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m runtime run --root ROOT ARGS...`, as a separate process."""
    return subprocess.run([sys.executable, "-m", "runtime", "run", "--root", str(root), *args],
                          input=input, capture_output=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
