"""Sizes at and past the limits: manifests up to exactly 4 MiB pull whole (with or
without Content-Length), bigger ones are refused in one line, and a blob longer
than its descriptor says is refused with nothing stored."""
from __future__ import annotations

import json
import urllib.request

import pytest

from registry.client import ClientOptions, pull, push
from registry.client.errors import ProtocolError, VerificationError
from storage import digests, mediatypes as mt
from tests.client.client_helpers import make_image, random_layer, start_soko_server
from tests.client.proxy import Proxy, Seen

FAST = ClientOptions(backoff=0.05, max_backoff=1.0)
MAX = 4 * 1024 * 1024


def put_manifest(host: str, repo: str, tag: str, raw: bytes, media_type: str = mt.OCI_MANIFEST) -> None:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", data=raw, method="PUT",
                                 headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 201


def padded(raw: bytes, size: int) -> bytes:
    """The same manifest grown to exactly `size` bytes with an annotation."""
    doc = json.loads(raw)
    doc["annotations"] = {"pad": ""}
    doc["annotations"]["pad"] = "p" * (size - len(json.dumps(doc).encode()))
    out = json.dumps(doc).encode()
    assert len(out) == size
    return out


def _base(store, host: str, repo: str):
    ref = f"{host}/{repo}:base"
    m = make_image(store, ref, [random_layer(store, 50_000, 31)])
    push(store, ref, None, FAST)
    return m


@pytest.mark.parametrize("size", [300_000, MAX])
def test_a_large_manifest_pulls_whole(registry, store, store2, repo_name, size):
    m = _base(store, registry.host, repo_name)
    raw = padded(m.raw, size)
    put_manifest(registry.host, repo_name, "big", raw)
    r = pull(store2, f"{registry.host}/{repo_name}:big", None, FAST)
    assert r.digest == digests.of_bytes(raw)
    assert store2.resolve(f"{registry.host}/{repo_name}:big").manifest.raw == raw


def _chunked(body: bytes, piece: int = 16 * 1024) -> bytes:
    """A 200 answer with a chunked manifest body (no Content-Length)."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                      for i in range(0, len(body), piece))
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {mt.OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n"
            f"Docker-Content-Digest: {digests.of_bytes(body)}\r\nConnection: close\r\n\r\n").encode() + chunks + \
        b"0\r\n\r\n"


def test_a_chunked_manifest_is_read_to_its_end(registry, store, store2, repo_name):
    m = _base(store, registry.host, repo_name)
    raw = padded(m.raw, 300_000)

    def serve(req: Seen) -> bytes | None:
        return _chunked(raw) if req.method == "GET" and req.path.endswith("/manifests/chunked") else None

    with Proxy(registry.host, intercept=serve) as px:
        r = pull(store2, f"{px.host}/{repo_name}:chunked", None, FAST)
    assert r.digest == digests.of_bytes(raw)
    assert store2.resolve(f"{px.host}/{repo_name}:chunked").manifest.raw == raw


def test_a_manifest_over_4_mib_is_refused_in_one_line(tmp_path, store, store2):
    reg = start_soko_server(tmp_path / "big-reg", config={"limits": {"max_manifest_bytes": 2 * MAX}})
    try:
        m = _base(store, reg.host, "big/manifest")
        put_manifest(reg.host, "big/manifest", "huge", padded(m.raw, MAX + 1))
        with pytest.raises(ProtocolError) as ei:  # announced by Content-Length
            pull(store2, f"{reg.host}/big/manifest:huge", None, FAST)
        assert str(MAX) in str(ei.value) and "\n" not in str(ei.value)

        def serve(req: Seen) -> bytes | None:  # the same without Content-Length: found while reading
            if req.method == "GET" and req.path.endswith("/manifests/huge"):
                return _chunked(padded(m.raw, MAX + 1))
            return None

        with Proxy(reg.host, intercept=serve) as px:
            with pytest.raises(ProtocolError) as ei:
                pull(store2, f"{px.host}/big/manifest:huge", None, FAST)
        assert str(MAX) in str(ei.value) and "\n" not in str(ei.value)
        assert store2.list() == []
    finally:
        reg.stop()


def test_a_blob_longer_than_its_descriptor_stores_nothing(registry, store, store2, repo_name):
    """The registry sends all 40 MB of the layer; the manifest says it has 1000 bytes: the pull
    stops reading soon after the first 1000 and stores nothing. (What the proxy counts includes
    what the kernel's loopback buffers took before the client closed: up to ~10 MB here.)"""
    ref = f"{registry.host}/{repo_name}:base"
    m = make_image(store, ref, [random_layer(store, 40_000_000, 32)])
    push(store, ref, None, FAST)
    doc = json.loads(m.raw)
    layer = doc["layers"][0]
    layer["size"] = 1000
    put_manifest(registry.host, repo_name, "short", json.dumps(doc).encode())
    with Proxy(registry.host) as px:
        with pytest.raises(VerificationError) as ei:
            pull(store2, f"{px.host}/{repo_name}:short", None, FAST)
    msg = str(ei.value)
    assert layer["digest"] in msg and "1000" in msg and "\n" not in msg
    assert px.down < 20_000_000, f"{px.down} bytes came down for a blob said to have 1000"
    assert not store2.blobs.has(layer["digest"])
    # the refused bytes are gone (another blob cut short by the failure may keep its part for a resume)
    assert not [p.name for p, _ in store2.blobs.ingest_entries() if layer["digest"][7:] in p.name]
    assert store2.list() == []
