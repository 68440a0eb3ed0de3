"""Images move both ways between soko and Docker Engine, and run on both."""
from __future__ import annotations

import pytest

from tests.conftest import need_root

pytestmark = [pytest.mark.root, pytest.mark.interop]


def test_docker_loads_what_soko_saves_and_runs_it(soko, busybox_rootfs, docker_engine, tmp_path):
    need_root()
    soko("import", "--change", 'CMD ["echo", "from-soko"]', busybox_rootfs, "soko-made:1")
    archive = tmp_path / "soko.tar"
    soko("save", "-o", archive, "soko-made:1")
    docker_engine("load", "-i", archive)
    out = docker_engine.out("run", "--rm", "--network", "none", "soko-made:1")
    assert out.strip() == "from-soko"
    docker_engine("rmi", "soko-made:1")


def test_soko_loads_what_docker_saves_and_runs_it(soko, docker_engine, tmp_path):
    need_root()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox:local\nRUN echo built-by-docker > /marker\nCMD ["cat", "/marker"]\n')
    docker_engine("build", "--network", "none", "-t", "docker-made:1", ctx)
    archive = tmp_path / "docker.tar"
    docker_engine("save", "-o", archive, "docker-made:1")
    soko("load", "-i", archive)
    assert soko("run", "--rm", "--network", "none", "docker-made:1").stdout.strip() == "built-by-docker"
    docker_engine("rmi", "docker-made:1")
