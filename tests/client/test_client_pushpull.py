"""Push and pull against real registries, checked with skopeo."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from registry.client import ClientOptions, pull, push
from storage import mediatypes as mt
from storage.images import ImageStore
from tests.client.client_helpers import busybox_layer, make_image, random_layer


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, check=True, timeout=120)


def test_push_then_skopeo_reads_it(registry, store, repo_name):
    ref = f"{registry.host}/{repo_name}:1.0"
    m = make_image(store, ref, [busybox_layer(store), random_layer(store, 300_000, 1)])
    events = []
    result = push(store, ref, None, ClientOptions(), events.append)
    assert result.digest == m.digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    assert raw == m.raw  # exact bytes, media type kept
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert info["Digest"] == m.digest
    assert info["Layers"] == [d.digest for d in m.layers]
    cfg = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    assert cfg["config"]["Cmd"] == ["/bin/sh"]
    actions = {(e.id, e.action) for e in events}
    for d in m.layers:
        assert (d.digest[7:19], "Pushed") in actions
    assert all(e.digest != m.config.digest for e in events)  # the config is not shown, as in Docker


def _oci_layout(store: ImageStore, manifest_digest: str, dest: Path, tag: str) -> None:
    """An OCI image layout directory of one image, for skopeo to read."""
    m = store.manifest(manifest_digest)
    (dest / "blobs" / "sha256").mkdir(parents=True)
    for d in [m.config, *m.layers]:
        shutil.copy(store.blobs.path(d.digest), dest / "blobs" / "sha256" / d.digest[7:])
    shutil.copy(store.blobs.path(m.digest), dest / "blobs" / "sha256" / m.digest[7:])
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_pull_what_skopeo_pushed(registry, store, store2, tmp_path, repo_name, fmt):
    m = make_image(store, "src:1", [busybox_layer(store), random_layer(store, 200_000, 2),
                                    random_layer(store, 100_000, 3)])
    _oci_layout(store, m.digest, tmp_path / "layout", "v1")
    ref = f"{registry.host}/{repo_name}:{fmt}"
    skopeo("copy", "--dest-tls-verify=false", "--format", fmt, f"oci:{tmp_path / 'layout'}:v1", f"docker://{ref}")
    remote_raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    events = []
    result = pull(store2, ref, None, ClientOptions(), events.append)
    img = store2.resolve(ref)
    assert img.manifest.raw == remote_raw
    assert img.manifest.media_type == (mt.DOCKER_MANIFEST if fmt == "v2s2" else mt.OCI_MANIFEST)
    assert result.digest == img.digest
    assert img.config.diff_ids == store.resolve("src:1").config.diff_ids
    for d in img.manifest.layers:
        assert store2.blobs.has(d.digest)
        assert store2.sources(d.digest, registry.host) == [repo_name]
    assert {e.action for e in events} >= {"Downloading", "Pull complete"}
    # pulling again downloads nothing
    again = pull(store2, ref, None, ClientOptions())
    assert again.downloaded == [] and set(again.present) == {d.digest for d in img.manifest.references()}


def test_second_image_sharing_layers_skips_and_mounts(registry, store, repo_name):
    base = [busybox_layer(store), random_layer(store, 400_000, 4)]
    first = f"{registry.host}/{repo_name}/base:1"
    make_image(store, first, base)
    push(store, first)
    extra = random_layer(store, 150_000, 5)
    # same repository: shared layers already exist there
    same = f"{registry.host}/{repo_name}/base:2"
    make_image(store, same, base + [extra], cmd=["/bin/ls"])
    events = []
    r = push(store, same, None, ClientOptions(), events.append)
    assert set(r.skipped) >= {d.digest for d, _ in base}
    assert extra[0].digest in r.pushed
    assert (base[0][0].digest[7:19], "Layer already exists") in {(e.id, e.action) for e in events}
    # another repository on the same registry: mounted from the first
    other = f"{registry.host}/{repo_name}/app:1"
    om = make_image(store, other, base + [extra], cmd=["/bin/true"])
    events = []
    r = push(store, other, None, ClientOptions(), events.append)
    assert set(r.mounted) == {d.digest for d, _ in base} | {extra[0].digest}
    assert r.pushed == [om.config.digest]  # the only new blob
    assert f"Mounted from {repo_name}/base" in {e.action for e in events}
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{other}").stdout
    assert raw == store.manifest(store.resolve_digest(other)).raw


def test_push_to_other_name_and_pull_back(registry, store, store2, repo_name):
    m = make_image(store, "local-only:dev", [busybox_layer(store)])
    dest = f"{registry.host}/{repo_name}:dev"
    push(store, "local-only:dev", dest)
    r = pull(store2, dest)
    assert r.digest == m.digest and r.image_id == m.config.digest
    assert store2.resolve(dest).config.config["Cmd"] == ["/bin/sh"]


def test_pull_by_digest_does_not_tag(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:x"
    m = make_image(store, ref, [busybox_layer(store)])
    push(store, ref)
    r = pull(store2, f"{registry.host}/{repo_name}@{m.digest}")
    assert r.digest == m.digest
    assert store2.tags_of(m.digest) == []
    assert store2.resolve(f"{registry.host}/{repo_name}@{m.digest}").digest == m.digest


def test_big_blob_goes_in_chunks(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:big"
    layer = random_layer(store, 3_000_000, 6)
    m = make_image(store, ref, [layer])
    opts = ClientOptions(monolithic_max=512 * 1024, chunk_size=700 * 1024)
    push(store, ref, None, opts)
    pull(store2, ref, None, opts)
    assert store2.blobs.read_bytes(layer[0].digest) == store.blobs.read_bytes(layer[0].digest)
    assert store2.resolve(ref).digest == m.digest
