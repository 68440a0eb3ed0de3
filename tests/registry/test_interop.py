"""Real clients against the server: skopeo, podman and buildah over loopback."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.interop.tools import Containers, need_tool, run

from .conftest import DOCKER_MANIFEST, OCI_MANIFEST, unique
from .layouts import busybox_layout

pytestmark = pytest.mark.interop

BACKENDS = ["directory", "s3"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout") / "busybox"
    digest = busybox_layout(d)
    return d, digest


def _skopeo(*args) -> str:
    need_tool("skopeo")
    return run("skopeo", "--insecure-policy", *args)


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_skopeo_copy_in_and_out(server, client, layout, tmp_path, fmt):
    src, src_digest = layout
    name = unique(f"skopeo-{fmt}")
    host = f"127.0.0.1:{server.port}"
    _skopeo("copy", "--dest-tls-verify=false", "--format", fmt, f"oci:{src}:latest", f"docker://{host}/{name}:v1")
    r = client.request("GET", f"/v2/{name}/manifests/v1", headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    assert r.status == 200
    pushed = r.header("Docker-Content-Digest")
    assert pushed == "sha256:" + hashlib.sha256(r.body).hexdigest()
    assert r.header("Content-Type") == (OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST)
    if fmt == "oci":
        assert pushed == src_digest  # nothing converted on the way in

    # out again, as is (dir: keeps the manifest bytes)
    out = tmp_path / "out"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{host}/{name}:v1", f"dir:{out}")
    assert "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == pushed
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{host}/{name}:v1"))
    assert inspected["Digest"] == pushed
    # and into an OCI layout, then by digest
    if fmt == "oci":
        _skopeo("copy", "--src-tls-verify=false", f"docker://{host}/{name}@{pushed}", f"oci:{tmp_path / 'lay'}:x")
        index = json.loads((tmp_path / "lay" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == src_digest
    # registry to registry: the blobs are mounted, the digest stays
    _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{host}/{name}:v1", f"docker://{host}/{name}-copy:v1")
    r = client.request("HEAD", f"/v2/{name}-copy/manifests/v1", headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    assert r.header("Docker-Content-Digest") == pushed
    tags = json.loads(_skopeo("list-tags", "--tls-verify=false", f"docker://{host}/{name}"))
    assert tags["Tags"] == ["v1"]


def test_podman_push_pull_run(server, client, layout, tmp_path):
    src, _ = layout
    podman = Containers("podman", tmp_path)
    try:
        host = f"127.0.0.1:{server.port}"
        name = f"{host}/{unique('podman')}/busybox:1"
        podman("pull", f"oci:{src}:latest")
        podman("tag", podman("images", "-q").split()[0], name)
        podman("push", "--tls-verify=false", name)
        podman("rmi", "-a", "-f")
        podman("pull", "--tls-verify=false", name)
        out = podman("run", "--rm", "--network", "none", name, "/bin/echo", "hi")
        assert out.strip() == "hi"
        # a second push of the same image is all HEADs and mounts
        podman("push", "--tls-verify=false", name, f"docker://{host}/{unique('again')}/busybox:1")
    finally:
        podman.cleanup()


def test_buildah_push(server, client, layout, tmp_path):
    src, _ = layout
    buildah = Containers("buildah", tmp_path)
    try:
        host = f"127.0.0.1:{server.port}"
        repo = unique("buildah")
        buildah("pull", f"oci:{src}:latest")
        image_id = buildah("images", "-q").split()[0]
        for fmt in ("oci", "docker"):
            buildah("push", "--tls-verify=false", "--format", fmt, image_id, f"docker://{host}/{repo}:{fmt}")
            r = client.request("GET", f"/v2/{repo}/manifests/{fmt}",
                               headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
            assert r.status == 200
            assert r.header("Content-Type") == (OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST)
            m = json.loads(r.body)
            for d in [m["config"], *m["layers"]]:
                b = client.request("GET", f"/v2/{repo}/blobs/{d['digest']}")
                assert b.status == 200 and len(b.body) == d["size"]
                assert "sha256:" + hashlib.sha256(b.body).hexdigest() == d["digest"]
    finally:
        buildah.cleanup()
