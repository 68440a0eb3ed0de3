"""Garbage collection of a registry root, offline and while the server takes pushes."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from registry.errors import RegistryError
from registry.server.gc import collect
from registry.server.sections import MetadataOptions

from .conftest import OCI_INDEX, OCI_MANIFEST, POSTGRES, SQLITE, sha256, unique

METADATA_BACKENDS = (SQLITE, POSTGRES)
BACKENDS = ["directory", "s3"]


def blob_file(root, digest: str):
    alg, enc = digest.split(":")
    return root / "blobs" / alg / enc


def _config_and_layers(raw: bytes) -> list[str]:
    doc = json.loads(raw)
    return [doc["config"]["digest"]] + [d["digest"] for d in doc["layers"]]


def test_collect(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    tagged, tagged_raw = c.push_image(name, "keep", layers=2)
    untagged, untagged_raw = c.push_image(name, None)
    loose = c.push_blob(name, b"never used by a manifest")
    child, child_raw = c.push_image(name, None)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": len(child_raw),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    assert c.put_manifest(name, "multi", index, OCI_INDEX).status == 201
    empty = c.push_blob(name, b"{}")
    referrer = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.example.sig", "digest": empty, "size": 2},
                           "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": tagged,
                                                     "size": len(tagged_raw)}}).encode()
    assert c.put_manifest(name, sha256(referrer), referrer).status == 201
    stale = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    c.request("PATCH", stale, body=b"abandoned")

    # a young registry: nothing goes
    report = srv.collect()
    assert report.blobs_removed == [] and report.links_removed == 0

    dry = srv.collect(dry_run=True, grace=0)
    assert dry.blobs_removed == [loose] and dry.links_removed == 1
    assert srv.blob_exists(loose)
    assert c.request("GET", f"/v2/{name}/blobs/{loose}").status == 200

    report = srv.collect(grace=0)
    assert report.blobs_removed == [loose] and report.bytes_freed == len(b"never used by a manifest")
    assert not srv.blob_exists(loose)
    assert c.request("GET", f"/v2/{name}/blobs/{loose}").status == 404
    for d in [tagged, untagged, child, sha256(index), sha256(referrer), *_config_and_layers(tagged_raw),
              *_config_and_layers(untagged_raw)]:
        assert c.request("GET", f"/v2/{name}/blobs/{d}").status == 200, d
    assert report.uploads_removed == 0
    assert c.request("GET", stale).status == 204  # a live session keeps its data

    report = srv.collect(grace=0, untagged=True, upload_ttl=0.001)
    assert report.manifests_removed == [(name, untagged)]
    assert sorted(report.blobs_removed) == sorted([untagged, *_config_and_layers(untagged_raw)])
    assert c.request("GET", f"/v2/{name}/manifests/{untagged}").status == 404
    for ref in ("keep", "multi", child, sha256(referrer)):  # tagged, index child, referrer of tagged
        assert c.request("GET", f"/v2/{name}/manifests/{ref}").status == 200, ref
    assert report.uploads_removed == 1
    assert c.request("GET", stale).status == 404
    assert not srv.ingest_exists(stale.rsplit('/', 1)[1])

    # untag: the image and then its referrer go
    assert c.request("DELETE", f"/v2/{name}/manifests/keep").status == 202
    report = srv.collect(grace=0, untagged=True)
    assert sorted(d for _, d in report.manifests_removed) == sorted([tagged, sha256(referrer)])
    assert not srv.blob_exists(tagged)
    assert srv.blob_exists(child)
    c.close()


def test_collect_refuses_non_registry(tmp_path):
    with pytest.raises(RegistryError, match="not a registry root"):
        collect(tmp_path)


def test_a_manifest_put_never_records_bytes_gc_just_deleted(tmp_path, test_metadata):
    """A manifest PUT commits its bytes (pushed before, unreferenced since) and a
    collection deletes them right after, before the PUT's transaction: the PUT must
    not record the manifest without them. The interleaving is forced: the store's
    commit returns, then gc runs."""
    import asyncio

    from registry.server.config import ServerConfig
    from registry.server.core import Registry
    from registry.server.manifests import describe, store, validate

    reg = Registry(ServerConfig(root=str(tmp_path / "root"), metadata=MetadataOptions(test_metadata)))
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                      "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                 "digest": sha256(b"{}")}}).encode()
    m, digest = validate("r", "v1", raw, OCI_MANIFEST)

    def gc_phase_2() -> None:
        with reg.meta.gc_transaction() as tx:
            assert not tx.is_linked(digest)
            reg.store.blocking.delete(digest)

    async def scenario() -> None:
        await reg.store.open()
        try:
            reg.meta.link_blob("r", sha256(b"{}"), 2, lambda: True)
            assert await store(reg, describe("r", m), ["v1"], raw) == []
            assert reg.meta.delete_manifest("r", digest)  # unreferenced now, its bytes still there
            put, raced = reg.store.put, []

            async def put_then_gc(data: bytes, expected: str):
                info = await put(data, expected)
                if not raced:  # once
                    raced.append(expected)
                    await reg.run(gc_phase_2)
                return info
            reg.store.put = put_then_gc
            assert await store(reg, describe("r", m), ["v1"], raw) == []
            assert raced == [digest]
            assert reg.meta.manifest_by_tag("r", "v1").digest == digest
            assert await reg.store.read_bytes(digest) == raw
        finally:
            await reg.store.close()
    try:
        asyncio.run(scenario())
    finally:
        reg.close()


def test_gc_while_pushing(fresh_server):
    """GC in a loop against the live root while a client pushes images: every
    pushed image stays whole, and old garbage still goes."""
    srv = fresh_server.start()
    c = srv.client()
    garbage_repo = unique("garbage")
    garbage = [c.push_blob(garbage_repo, os.urandom(1000)) for _ in range(5)]
    time.sleep(3.2)
    stop = threading.Event()
    removed: list[str] = []
    errors: list[BaseException] = []

    def gc_loop() -> None:
        try:
            while not stop.is_set():
                removed.extend(srv.collect(grace=3.0, untagged=True).blobs_removed)
                time.sleep(0.02)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=gc_loop)
    t.start()
    pushed = []
    try:
        for i in range(25):
            name = unique("live")
            shared = c.push_blob(name, b"shared base layer")  # identical in every image
            digest, raw = c.push_image(name, "v1", layers=2)
            pushed.append((name, digest, raw, shared))
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert set(garbage) <= set(removed)
    for name, digest, raw, _ in pushed:
        assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
        for d in _config_and_layers(raw):
            assert c.request("GET", f"/v2/{name}/blobs/{d}").status == 200, d
    c.close()


def test_online_gc_in_server(fresh_server, tmp_path):
    srv = fresh_server.configure({"gc": {"interval": 0.5, "grace": 2, "untagged": True}}).start()
    c = srv.client()
    name = unique()
    digest, raw = c.push_image(name, "v1")
    loose = c.push_blob(name, b"loose")
    deadline = time.time() + 20
    while srv.blob_exists(loose) and time.time() < deadline:
        time.sleep(0.2)
    assert not srv.blob_exists(loose)
    assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
    c.close()
