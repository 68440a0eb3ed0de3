"""copy between registries and the local store; indexes with their children."""
from __future__ import annotations

import subprocess

import pytest

from registry.client import ClientOptions, copy, pull, push
from registry.client.errors import ClientError, UsageError, VerificationError
from registry.client.transports import parse_endpoint
from storage.images import ImageStore
from storage.model import Descriptor, ImageConfig, Platform, build_index
from tests.client.client_helpers import busybox_layer, make_image, random_layer
from tests.client.proxy import Proxy

FAST = dict(backoff=0.05)


def skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, check=True).stdout


def make_index(store: ImageStore, ref: str) -> tuple[str, dict[str, str]]:
    """An OCI index of an amd64 and an arm64 image sharing a layer; returns (index digest, arch -> manifest)."""
    shared = busybox_layer(store)
    children, by_arch = [], {}
    for i, arch in enumerate(["amd64", "arm64"]):
        own = random_layer(store, 50_000 + i, 30 + i)
        cfg = ImageConfig.new(Platform("linux", arch, "v8" if arch == "arm64" else None))
        for _, diff_id in (shared, own):
            cfg.diff_ids.append(diff_id)
        m = store.commit(cfg, [shared[0], own[0]])
        by_arch[arch] = m.digest
        children.append(Descriptor(m.media_type, m.digest, len(m.raw), platform=cfg.platform))
    idx = build_index(children)
    store.add_index(idx.raw, idx.media_type)
    store.tag(ref, idx.digest)
    return idx.digest, by_arch


def test_endpoints_parse():
    assert parse_endpoint("docker://localhost:5000/a/b:1").ref == "localhost:5000/a/b:1"
    e = parse_endpoint("oci-archive:/tmp/x.tar:app:2")
    assert (e.kind, str(e.path), e.ref) == ("oci-archive", "/tmp/x.tar", "app:2")
    assert parse_endpoint("docker-archive:/tmp/y.tar").ref is None
    assert parse_endpoint("soko:busybox").kind == "soko"
    for bad in ("ftp://x", "docker://", "soko:UPPER", "oci-archive:"):
        with pytest.raises(UsageError):
            parse_endpoint(bad)


def test_registry_to_registry_streams_and_mounts_on_one_registry(registry, distribution, store, repo_name):
    src = f"{registry.host}/{repo_name}/src:1"
    m = make_image(store, src, [busybox_layer(store), random_layer(store, 300_000, 40)])
    push(store, src)
    before = {p.name for p in store.blobs.blobs_dir.rglob("*")}
    # another registry: blobs stream through, the local store is not touched
    other = f"{distribution.host}/{repo_name}/copied:1"
    events = []
    r = copy(f"docker://{src}", f"docker://{other}", ClientOptions(**FAST), events.append)
    assert r.digest == m.digest and skopeo_raw(other) == m.raw
    assert {p.name for p in store.blobs.blobs_dir.rglob("*")} == before
    assert "Pushed" in {e.action for e in events}
    # the same registry: every blob is mounted
    same = f"{registry.host}/{repo_name}/same:1"
    events = []
    copy(f"docker://{src}", f"docker://{same}", ClientOptions(**FAST), events.append)
    assert skopeo_raw(same) == m.raw
    actions = {e.action for e in events}
    assert actions == {f"Mounted from {repo_name}/src"}


def test_index_push_copy_and_platform_pull(registry, distribution, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}/multi:1"
    idx_digest, by_arch = make_index(store, ref)
    r = push(store, ref)
    assert r.digest == idx_digest
    assert skopeo_raw(ref) == store.blobs.read_bytes(idx_digest)
    for arch, digest in by_arch.items():
        assert skopeo_raw(f"{registry.host}/{repo_name}/multi@{digest}") == store.blobs.read_bytes(digest)
    other = f"{distribution.host}/{repo_name}/multi:1"
    copy(f"docker://{ref}", f"docker://{other}", ClientOptions(**FAST))
    assert skopeo_raw(other) == store.blobs.read_bytes(idx_digest)
    pr = pull(store2, other, Platform("linux", "arm64"), ClientOptions(**FAST))
    assert pr.digest == by_arch["arm64"] and pr.index_digest == idx_digest
    assert store2.resolve(other).config.platform.architecture == "arm64"
    pr = pull(store2, other, Platform("linux", "amd64"), ClientOptions(**FAST))
    assert pr.digest == by_arch["amd64"]
    assert len(pr.present) == 1  # the shared layer was already there


def test_copy_with_the_local_store(registry, store, store2, repo_name):
    m = make_image(store, "mine:1", [busybox_layer(store)])
    dest = f"{registry.host}/{repo_name}:1"
    copy("soko:mine:1", f"docker://{dest}", ClientOptions(**FAST), store=store)
    assert skopeo_raw(dest) == m.raw
    r = copy(f"docker://{dest}", "soko:fetched:2", ClientOptions(**FAST), store=store2)
    assert r.digest == m.digest
    assert store2.resolve("fetched:2").digest == m.digest
    copy("soko:fetched:2", "soko:again:3", store=store2)
    assert store2.resolve("again:3").digest == m.digest
    with pytest.raises(UsageError):
        copy("soko:mine:1", "soko:x:1")  # no store given


def test_copy_catches_a_source_serving_wrong_bytes(registry, distribution, store, repo_name):
    src = f"{registry.host}/{repo_name}/bad:1"
    layer = random_layer(store, 2_000_000, 41)
    make_image(store, src, [layer])
    push(store, src)
    with Proxy(registry.host, corrupt_at=1_000_000) as px:
        with pytest.raises(VerificationError) as ei:
            copy(f"docker://{px.host}/{repo_name}/bad:1", f"docker://{distribution.host}/{repo_name}/bad:1",
                 ClientOptions(jobs=1, **FAST))
    assert px.corrupted and layer[0].digest in str(ei.value)
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{distribution.host}/{repo_name}/bad:1"], capture_output=True)
    assert out.returncode != 0  # no manifest landed
    head = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                           f"http://{distribution.host}/v2/{repo_name}/bad/blobs/{layer[0].digest}"],
                          capture_output=True, text=True).stdout
    assert head == "404"  # nor the blob


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], capture_output=True, check=True, timeout=120).stdout


def test_local_store_to_oci_archive_and_on_to_a_registry(registry, store, tmp_path, repo_name):
    m = make_image(store, "arch/one:1", [busybox_layer(store), random_layer(store, 100_000, 50)])
    archive = tmp_path / "one.tar"
    copy("soko:arch/one:1", f"oci-archive:{archive}", store=store)
    assert skopeo("inspect", "--raw", f"oci-archive:{archive}") == m.raw
    dest = f"{registry.host}/{repo_name}:from-archive"
    r = copy(f"oci-archive:{archive}", f"docker://{dest}", ClientOptions(**FAST))
    assert r.digest == m.digest and skopeo_raw(dest) == m.raw


def test_registry_to_docker_archive_and_back_into_a_store(registry, store, store2, tmp_path, repo_name):
    src = f"{registry.host}/{repo_name}:d"
    m = make_image(store, src, [busybox_layer(store)])
    push(store, src)
    archive = tmp_path / "d.tar"
    copy(f"docker://{src}", f"docker-archive:{archive}:saved/image:7", ClientOptions(**FAST))
    cfg = skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}")
    assert cfg == store.blobs.read_bytes(m.config.digest)   # the same image, layers stored uncompressed
    copy(f"docker-archive:{archive}", "soko:restored:1", store=store2)
    img = store2.resolve("restored:1")
    assert img.id == m.config.digest
    assert [t for t in (s.repository for s in store2.list())] == ["restored"]  # not saved/image too


def test_archive_skopeo_wrote_into_the_store(registry, store, store2, tmp_path, repo_name):
    src = f"{registry.host}/{repo_name}:s"
    m = make_image(store, src, [busybox_layer(store), random_layer(store, 80_000, 51)])
    push(store, src)
    archive = tmp_path / "sk.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{src}", f"docker-archive:{archive}:sk/app:2")
    copy(f"docker-archive:{archive}:sk/app:2", "soko:sk/app:2", store=store2)
    assert store2.resolve("sk/app:2").config.diff_ids == store.resolve(src).config.diff_ids


def test_archive_with_several_images_needs_a_name(store, tmp_path):
    make_image(store, "multi/a:1", [busybox_layer(store)])
    make_image(store, "multi/b:1", [random_layer(store, 10_000, 52)])
    from storage.archives import save
    archive = tmp_path / "two.tar"
    save(store, ["multi/a:1", "multi/b:1"], archive, "oci")
    with pytest.raises(ClientError) as ei:
        copy(f"oci-archive:{archive}", "soko:x:1", store=store)
    assert "multi/a:1" in str(ei.value) and "multi/b:1" in str(ei.value) and "\n" not in str(ei.value)
    copy(f"oci-archive:{archive}:multi/b:1", "soko:picked:1", store=store)
    assert store.resolve("picked:1").digest == store.resolve("multi/b:1").digest
    with pytest.raises(ClientError):
        copy(f"oci-archive:{tmp_path / 'missing.tar'}", "soko:x:1", store=store)
