"""Compression on push: uncompressed layers (import, load, commit) travel gzip by default, zstd
or as they are on request; the compressed blob is made once and remembered, so every later push
sends the same digest; what was pushed pulls back (soko, skopeo + umoci, Docker) as the same image."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import urllib.request

import pytest

from storage import mediatypes as mt
from storage.images import ImageStore
from tests.client.client_helpers import start_distribution
from tests.conftest import SokoCLI, need_root
from tests.interop.tools import need_tool, run

ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST])


@pytest.fixture
def registry(tmp_path):
    need_tool("docker-registry")
    reg = start_distribution(tmp_path / "reg")
    yield reg
    reg.stop()


def get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req) as r:
        return r.read()


def manifest(host: str, repo: str, ref: str) -> dict:
    return json.loads(get(f"http://{host}/v2/{repo}/manifests/{ref}", ACCEPT))


def pushed_digest(out: str) -> str:
    return out.strip().splitlines()[-1].split("digest: ")[1].split()[0]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_rows(root, diff_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "metadata.db") as c:
        return c.execute("SELECT blob_digest, compression FROM layers WHERE diff_id=? ORDER BY compression",
                         (diff_id,)).fetchall()


def test_push_gzips_an_uncompressed_layer_once_and_keeps_its_digest(soko, busybox_rootfs, registry, tmp_path):
    host = registry.host
    soko("import", busybox_rootfs, "bb:1")
    diff_id = json.loads(soko("inspect", "bb:1").stdout)[0]["RootFS"]["Layers"][0]
    out = soko("push", "--compression-level", "1", "bb:1", f"{host}/a/bb:1").stdout
    digest = pushed_digest(out)
    m = manifest(host, "a/bb", "1")
    assert sha256(get(f"http://{host}/v2/a/bb/manifests/1", ACCEPT)) == digest
    (layer,) = m["layers"]
    assert layer["mediaType"] == mt.OCI_LAYER_GZIP
    data = get(f"http://{host}/v2/a/bb/blobs/{layer['digest']}")
    assert sha256(data) == layer["digest"] and len(data) == layer["size"]
    raw = gzip.decompress(data)
    assert sha256(raw) == diff_id and len(data) < 0.7 * len(raw)
    assert layer_rows(soko.root, diff_id) == [(layer["digest"], "gzip"), (diff_id, "none")]

    # Another registry, and another level asked for: the remembered blob goes, not a new one.
    other = start_distribution(tmp_path / "reg2")
    try:
        again = soko("push", "bb:1", f"{other.host}/a/bb:1").stdout
        assert ": Pushed" in again and pushed_digest(again) == digest
        assert manifest(other.host, "a/bb", "1") == m
    finally:
        other.stop()
    assert layer_rows(soko.root, diff_id) == [(layer["digest"], "gzip"), (diff_id, "none")]
    # The pushed manifest is one of the image's (its repo digest), and the local tag is unchanged.
    info = json.loads(soko("inspect", "bb:1").stdout)[0]
    assert f"{host}/a/bb@{digest}" in info["RepoDigests"]
    assert soko("images", "-q").stdout.split() == [info["Id"].split(":")[1][:12]]


def test_the_compressed_layer_lives_as_long_as_its_image(soko, busybox_rootfs, registry):
    soko("import", busybox_rootfs, "bb:1")
    soko("push", "bb:1", f"{registry.host}/a/bb:1")
    layer = manifest(registry.host, "a/bb", "1")["layers"][0]["digest"]
    path = soko.root / "blobs" / "sha256" / layer.split(":")[1]
    soko("gc", "--grace", "0")
    assert path.is_file()
    soko("rmi", "bb:1")
    soko("gc", "--grace", "0")
    assert not path.exists()


def test_pushed_image_pulls_back_as_the_same_image(soko, busybox_rootfs, registry, tmp_path):
    need_root()
    host = registry.host
    soko("import", busybox_rootfs, "bb:1")
    soko("push", "bb:1", f"{host}/a/bb:1")
    local = json.loads(soko("inspect", "bb:1").stdout)[0]
    fresh = SokoCLI(tmp_path / "fresh")
    fresh("pull", f"{host}/a/bb:1")
    pulled = json.loads(fresh("inspect", f"{host}/a/bb:1").stdout)[0]
    assert pulled["Id"] == local["Id"] and pulled["RootFS"] == local["RootFS"]
    r = fresh("run", "--rm", "--network", "none", f"{host}/a/bb:1", "sh", "-c", "echo round trip; ls /bin/busybox")
    assert r.stdout == "round trip\n/bin/busybox\n"


def test_skopeo_umoci_and_zstd_verify_what_was_pushed(soko, busybox_rootfs, registry, tmp_path):
    for tool in ("skopeo", "umoci", "zstd"):
        need_tool(tool)
    host = registry.host
    soko("import", busybox_rootfs, "bb:1")
    diff_id = json.loads(soko("inspect", "bb:1").stdout)[0]["RootFS"]["Layers"][0]
    for kind in ("gzip", "zstd"):
        soko("push", "--compression", kind, "bb:1", f"{host}/a/bb:{kind}")
        layout = tmp_path / f"layout-{kind}"
        # skopeo checks every blob against its digest and size
        run("skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/a/bb:{kind}", f"oci:{layout}:1")
        index = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        m = json.loads((layout / "blobs" / "sha256" / index.split(":")[1]).read_text())
        blob = layout / "blobs" / "sha256" / m["layers"][0]["digest"].split(":")[1]
        if kind == "gzip":  # umoci checks the layer's diff_id against the config as it unpacks
            run("umoci", "unpack", "--rootless", "--image", f"{layout}:1", tmp_path / "bundle")
            assert (tmp_path / "bundle" / "rootfs" / "bin" / "busybox").is_file()
        else:  # Debian's umoci knows no zstd: the zstd tool's own check, then the diff_id
            raw = subprocess.run(["zstd", "-dc", blob], capture_output=True, check=True).stdout
            assert sha256(raw) == diff_id


def test_docker_pulls_and_runs_what_was_pushed(soko, busybox_rootfs, registry, docker_engine):
    host = registry.host
    soko("import", "-c", 'CMD ["echo", "from soko"]', busybox_rootfs, "bb:1")
    soko("push", "bb:1", f"{host}/a/bb:1")
    docker_engine("pull", f"{host}/a/bb:1")
    assert docker_engine.out("run", "--rm", "--network", "none", f"{host}/a/bb:1") == "from soko\n"
    docker_engine("rmi", f"{host}/a/bb:1")


def test_compression_choices(soko, busybox_rootfs, registry):
    host = registry.host
    soko("import", busybox_rootfs, "bb:1")
    local = json.loads(soko("inspect", "bb:1").stdout)[0]
    diff_id = local["RootFS"]["Layers"][0]
    # none: the manifest as stored, byte for byte
    plain = pushed_digest(soko("push", "--compression", "none", "bb:1", f"{host}/a/bb:none").stdout)
    assert plain == ImageStore(soko.root).resolve_digest("bb:1")
    assert manifest(host, "a/bb", "none")["layers"][0] == {"mediaType": mt.OCI_LAYER, "digest": diff_id,
                                                          "size": manifest(host, "a/bb", "none")["layers"][0]["size"]}
    zst = pushed_digest(soko("push", "--compression", "zstd", "--compression-level", "19", "bb:1",
                             f"{host}/a/bb:zstd").stdout)
    layer = manifest(host, "a/bb", "zstd")["layers"][0]
    assert layer["mediaType"] == mt.OCI_LAYER_ZSTD
    assert get(f"http://{host}/v2/a/bb/blobs/{layer['digest']}")[:4] == b"\x28\xb5\x2f\xfd"
    gz = pushed_digest(soko("push", "bb:1", f"{host}/a/bb:gzip").stdout)
    assert len({plain, zst, gz}) == 3
    assert [c for _, c in layer_rows(soko.root, diff_id)] == ["gzip", "none", "zstd"]


@pytest.mark.parametrize("args, message", [
    (["--compression", "lz4"], "Invalid value for '--compression': 'lz4' is not one of 'gzip', 'zstd', 'none'"),
    (["--compression-level", "12"], "Invalid value for '--compression-level': gzip level must be 0..9, not 12"),
    (["--compression", "zstd", "--compression-level", "0"],
     "Invalid value for '--compression-level': zstd level must be 1..22, not 0"),
    (["--compression", "none", "--compression-level", "3"],
     "Invalid value for '--compression-level': compression none has no levels"),
])
def test_bad_compression_options_are_one_clear_error(soko, busybox_rootfs, registry, args, message):
    soko("import", busybox_rootfs, "bb:1")
    before = sorted(p.name for p in (soko.root / "blobs" / "sha256").iterdir())
    r = soko("push", *args, "bb:1", f"{registry.host}/a/bb:1", check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert sorted(p.name for p in (soko.root / "blobs" / "sha256").iterdir()) == before
    assert json.loads(get(f"http://{registry.host}/v2/_catalog"))["repositories"] == []


def test_two_pushes_at_once_compress_a_shared_layer_once(soko, registry, tmp_path):
    """Two images share a 48 MiB uncompressed layer; two `soko push` run at the same time, asking
    for different levels. One compresses, the other waits and sends the very same blob."""
    rnd = random.Random(5)
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    words = [rnd.randbytes(6).hex().encode() for _ in range(4000)]
    (rootfs / "data" / "words").write_bytes(b" ".join(rnd.choices(words, k=4 << 20)))
    tar = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
    soko("import", "-c", "ENV WHO=one", tar, "one:1")
    soko("import", "-c", "ENV WHO=two", tar, "two:1")
    diff_id = json.loads(soko("inspect", "one:1").stdout)[0]["RootFS"]["Layers"][0]
    env = {**soko.env}
    procs = [subprocess.Popen([*soko.argv(), "push", "--compression-level", level, f"{name}:1",
                               f"{registry.host}/{name}/img:1"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for name, level in (("one", "9"), ("two", "1"))]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    layers = [manifest(registry.host, f"{name}/img", "1")["layers"] for name in ("one", "two")]
    assert layers[0] == layers[1] and layers[0][0]["mediaType"] == mt.OCI_LAYER_GZIP
    assert [c for _, c in layer_rows(soko.root, diff_id)] == ["gzip", "none"]
    leftovers = [p for p in os.listdir(soko.root / "ingest") if not p.endswith(".lock")]
    assert leftovers == []


def test_an_index_goes_with_its_children_compressed(soko, busybox_rootfs, registry):
    """Each child manifest is rewritten to point at its compressed layers, and the index at
    the rewritten children; everything it names is in the registry."""
    from storage.model import Descriptor, Platform, build_index

    soko("import", "-c", "ENV ARCH=amd64", busybox_rootfs, "amd:1")
    soko("import", "-c", "ENV ARCH=arm64", busybox_rootfs, "arm:1")
    store = ImageStore(soko.root)
    children = [store.manifest(store.resolve_digest(r)) for r in ("amd:1", "arm:1")]
    idx = build_index([Descriptor(m.media_type, m.digest, len(m.raw), platform=Platform("linux", arch))
                       for m, arch in zip(children, ("amd64", "arm64"))])
    store.add_index(idx.raw, idx.media_type)
    store.tag("multi:1", idx.digest)
    store.db.close()
    digest = pushed_digest(soko("push", "multi:1", f"{registry.host}/a/multi:1").stdout)
    pushed = manifest(registry.host, "a/multi", "1")
    assert digest != idx.digest and sha256(get(f"http://{registry.host}/v2/a/multi/manifests/1", ACCEPT)) == digest
    assert [c["platform"]["architecture"] for c in pushed["manifests"]] == ["amd64", "arm64"]
    layers = set()
    for c in pushed["manifests"]:
        child = manifest(registry.host, "a/multi", c["digest"])
        assert c["digest"] not in {m.digest for m in children}
        (layer,) = child["layers"]
        assert layer["mediaType"] == mt.OCI_LAYER_GZIP
        layers.add(layer["digest"])
    assert len(layers) == 1  # one layer shared by both, compressed once
    data = get(f"http://{registry.host}/v2/a/multi/blobs/{layers.pop()}")
    assert sha256(gzip.decompress(data)) == children[0].layers[0].digest
