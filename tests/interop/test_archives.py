"""Archives that soko writes are read by skopeo, umoci and podman; archives
they write load into soko with the same diff_ids."""
from __future__ import annotations

import json

import pytest

from tests.conftest import SokoCLI, need_root
from tests.interop.tools import Containers, need_tool, run

pytestmark = pytest.mark.interop


@pytest.fixture
def image(soko, busybox_rootfs):
    soko("import", "--change", 'CMD ["/bin/sh"]', busybox_rootfs, "busybox:interop")
    return json.loads(soko("inspect", "busybox:interop").stdout)[0]


def test_oci_archive_read_by_skopeo_and_umoci(soko, image, tmp_path):
    need_tool("skopeo")
    need_tool("umoci")
    out = tmp_path / "bb-oci.tar"
    soko("save", "--format", "oci", "-o", out, "busybox:interop")
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}"))
    assert info["Digest"] == image["Soko"]["Digest"]  # stored manifest bytes kept exactly
    config = json.loads(run("skopeo", "inspect", "--config", f"oci-archive:{out}"))
    assert config["rootfs"]["diff_ids"] == image["RootFS"]["Layers"]
    layout = tmp_path / "layout"
    layout.mkdir()
    run("tar", "-C", layout, "-xf", out)
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:interop", bundle)
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert (bundle / "rootfs" / "etc" / "passwd").read_text().startswith("root:")


def test_docker_archive_runs_in_podman(soko, image, tmp_path):
    need_root()
    podman = Containers("podman", tmp_path)
    out = tmp_path / "bb-docker.tar"
    soko("save", "-o", out, "busybox:interop")
    try:
        loaded = podman("load", "-i", out)
        assert "busybox:interop" in loaded
        assert podman("run", "--rm", "busybox:interop", "/bin/echo", "hi").strip() == "hi"
        inspected = json.loads(podman("image", "inspect", "busybox:interop"))[0]
        assert inspected["RootFS"]["Layers"] == image["RootFS"]["Layers"]
    finally:
        podman.cleanup()


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_skopeo_written_archives_load(soko, image, tmp_path, transport):
    need_tool("skopeo")
    src = tmp_path / "src.tar"
    soko("save", "--format", "oci", "-o", src, "busybox:interop")
    dest = tmp_path / f"{transport}.tar"
    run("skopeo", "copy", f"oci-archive:{src}", f"{transport}:{dest}:example.com/sk/bb:{transport}")
    other = SokoCLI(tmp_path / "fresh")
    out = other("load", "-i", dest).stdout
    assert f"Loaded image: example.com/sk/bb:{transport}" in out
    loaded = json.loads(other("inspect", f"example.com/sk/bb:{transport}").stdout)[0]
    assert loaded["RootFS"]["Layers"] == image["RootFS"]["Layers"]
    assert loaded["Config"]["Cmd"] == ["/bin/sh"]


def test_roundtrip_keeps_digest_and_compression(soko, image, tmp_path):
    for fmt in ("docker", "oci"):
        out = tmp_path / f"{fmt}.tar"
        soko("save", "--format", fmt, "-o", out, "busybox:interop")
        soko("rmi", "busybox:interop")
        assert soko("load", "-i", out).stdout.strip() == "Loaded image: busybox:interop"
        again = json.loads(soko("inspect", "busybox:interop").stdout)[0]
        assert again["Id"] == image["Id"]
        assert again["RootFS"] == image["RootFS"]
    gz = tmp_path / "docker.tar.gz"
    run("gzip", "-k", tmp_path / "docker.tar")
    soko("rmi", "busybox:interop")
    soko("load", "-i", gz)
    assert json.loads(soko("inspect", "busybox:interop").stdout)[0]["Id"] == image["Id"]
