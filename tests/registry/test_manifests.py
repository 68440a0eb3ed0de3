"""Manifest, tag, catalog and referrers endpoints against a real server."""
from __future__ import annotations

import json

from .conftest import (DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, POSTGRES, SQLITE, sha256,
                       sha512, unique)

METADATA_BACKENDS = (SQLITE, POSTGRES)

BACKENDS = ["directory", "s3"]


def test_manifest_by_tag_and_digest_exact_bytes(client):
    name = unique()
    digest, raw = client.push_image(name, "v1")
    for ref in ("v1", digest):
        r = client.request("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200
        assert r.body == raw  # byte for byte, indentation included
        assert r.header("Content-Type") == OCI_MANIFEST
        assert r.header("Docker-Content-Digest") == digest
        r = client.request("HEAD", f"/v2/{name}/manifests/{ref}")
        assert r.status == 200 and r.body == b""
        assert r.header("Content-Length") == str(len(raw))
        assert r.header("Docker-Content-Digest") == digest
    # also readable as a blob of the repository
    assert client.request("GET", f"/v2/{name}/blobs/{digest}").body == raw


def test_put_response_headers(client):
    name = unique()
    cfg = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
    cd = client.push_blob(name, cfg)
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(cfg)}, "layers": []}).encode()
    r = client.put_manifest(name, "t", raw)
    assert r.status == 201
    assert r.header("Location") == f"/v2/{name}/manifests/{sha256(raw)}"
    assert r.header("Docker-Content-Digest") == sha256(raw)
    assert r.header("OCI-Subject") is None


def test_manifest_unknown(client):
    name = unique()
    r = client.request("GET", f"/v2/{name}/manifests/latest")
    assert r.status == 404 and r.codes == ["NAME_UNKNOWN"]
    client.push_image(name, "v1")
    r = client.request("GET", f"/v2/{name}/manifests/v2")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    r = client.request("GET", f"/v2/{name}/manifests/{sha256(b'x')}")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    r = client.request("GET", f"/v2/{name}/manifests/sha256:abc")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


def test_references_must_exist(client):
    name = unique()
    cfg = b"{}"
    cd = client.push_blob(name, cfg)
    missing = sha256(b"never pushed")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": 2},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing,
                                  "size": 12}]}).encode()
    r = client.put_manifest(name, "latest", raw)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"] == {"digest": missing}
    assert client.request("GET", f"/v2/{name}/manifests/latest").status == 404
    # a blob of another repository does not count
    other = unique()
    client.push_blob(other, b"never pushed")
    r = client.put_manifest(name, "latest", raw)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]
    # an index whose child manifest is unknown
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(b"child"), "size": 5}]}).encode()
    r = client.put_manifest(name, "idx", index, OCI_INDEX)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]


def test_invalid_manifests(client):
    name = unique()
    cases = [b"not json", b"[]", json.dumps({"schemaVersion": 1, "mediaType": OCI_MANIFEST}).encode(),
             json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
             json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": {"mediaType": OCI_CONFIG, "digest": "sha256:zz", "size": 1},
                         "layers": []}).encode(),
             json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.example+json",
                         "config": {}, "layers": []}).encode()]
    for raw in cases:
        r = client.put_manifest(name, "latest", raw)
        assert r.status == 400 and r.codes == ["MANIFEST_INVALID"], raw
    # Content-Type disagreeing with the document's mediaType
    cfg = client.push_blob(name, b"{}")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}, "layers": []}).encode()
    r = client.put_manifest(name, "latest", raw, DOCKER_MANIFEST)
    assert r.status == 400 and r.codes == ["MANIFEST_INVALID"]


def test_tags_validated(client):
    name = unique()
    _, raw = client.push_image(name, "ok")
    for bad in ("-dash", ".dot", "a" * 129, "sp%20ace"):
        r = client.put_manifest(name, bad, raw)
        assert r.status == 400 and r.codes == ["TAG_INVALID"], bad
        r = client.request("GET", f"/v2/{name}/manifests/{bad}")
        assert r.status == 400 and r.codes == ["TAG_INVALID"], bad
    assert client.put_manifest(name, "A_tag.with-Everything_" + "x" * 100, raw).status == 201


def test_put_by_digest_must_match(client):
    name = unique()
    digest, raw = client.push_image(name, None)
    r = client.put_manifest(name, sha256(raw + b" "), raw)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    r = client.put_manifest(name, digest, raw)
    assert r.status == 201 and r.header("Docker-Content-Digest") == digest


def test_sha512_manifest(client):
    name = unique()
    _, raw = client.push_image(name, "x")
    d512 = sha512(raw)
    r = client.put_manifest(name, d512, raw)
    assert r.status == 201 and r.header("Docker-Content-Digest") == d512
    r = client.request("GET", f"/v2/{name}/manifests/{d512}")
    assert r.status == 200 and r.body == raw and r.header("Docker-Content-Digest") == d512


def test_put_by_digest_with_tags(client):
    name = unique()
    digest, raw = client.push_image(name, None)
    r = client.put_manifest(name, f"{digest}?tag=one&tag=two", raw)
    assert r.status == 201
    assert sorted(r.headers.get_all("OCI-Tag")) == ["one", "two"]
    for t in ("one", "two"):
        assert client.request("GET", f"/v2/{name}/manifests/{t}").header("Docker-Content-Digest") == digest
    r = client.put_manifest(name, f"{digest}?tag=-bad", raw)
    assert r.status == 400 and r.codes == ["TAG_INVALID"]


def test_manifest_size_limit(client):
    name = unique()
    cfg = client.push_blob(name, b"{}")

    def manifest_of(size: int) -> bytes:
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}, "layers": [],
               "annotations": {"pad": ""}}
        base = len(json.dumps(doc).encode())
        doc["annotations"]["pad"] = "p" * (size - base)
        raw = json.dumps(doc).encode()
        assert len(raw) == size
        return raw

    big = manifest_of(4 * 1024 * 1024)
    r = client.put_manifest(name, "big", big)
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{name}/manifests/big").body == big
    r = client.put_manifest(name, "toobig", manifest_of(4 * 1024 * 1024 + 1))
    assert r.status == 413 and r.codes == ["MANIFEST_INVALID"]
    assert client.request("GET", f"/v2/{name}/manifests/toobig").status == 404


def test_tags_list_pagination(client):
    name = unique()
    digest, raw = client.push_image(name, "latest")
    tags = ["latest", "v1", "v10", "v2", "A", "b", "_x"]
    for t in tags[1:]:
        assert client.put_manifest(name, t, raw).status == 201
    expect = sorted(tags)
    r = client.request("GET", f"/v2/{name}/tags/list")
    assert r.status == 200 and r.json() == {"name": name, "tags": expect}
    assert r.header("Link") is None
    got, url = [], f"/v2/{name}/tags/list?n=3"
    while url:
        r = client.request("GET", url)
        page = r.json()["tags"]
        assert len(page) <= 3
        got += page
        link = r.header("Link")
        url = link[1:link.index(">")] if link else None
    assert got == expect
    r = client.request("GET", f"/v2/{name}/tags/list?n=2&last={expect[1]}")
    assert r.json()["tags"] == expect[2:4]
    r = client.request("GET", f"/v2/{name}/tags/list?last={expect[-2]}")
    assert r.json()["tags"] == expect[-1:]
    r = client.request("GET", f"/v2/{name}/tags/list?n=0")
    assert r.json()["tags"] == [] and r.header("Link") is None
    r = client.request("GET", f"/v2/{name}/tags/list?n=100")
    assert r.json()["tags"] == expect and r.header("Link") is None
    r = client.request("GET", f"/v2/{name}/tags/list?n=-1")
    assert r.status == 400
    r = client.request("GET", f"/v2/{unique()}/tags/list")
    assert r.status == 404 and r.codes == ["NAME_UNKNOWN"]


def test_catalog_pagination(fresh_server):
    srv = fresh_server.start()
    try:
        c = srv.client()
        names = sorted(["alpha", "beta/one", "beta/two", "gamma", "zeta"])
        for n in names:
            c.push_image(n)
        assert c.request("GET", "/v2/_catalog").json() == {"repositories": names}
        r = c.request("GET", "/v2/_catalog?n=2")
        assert r.json()["repositories"] == names[:2]
        assert r.header("Link") == '</v2/_catalog?n=2&last=beta%2Fone>; rel="next"'
        r = c.request("GET", "/v2/_catalog?n=2&last=beta%2Fone")
        assert r.json()["repositories"] == names[2:4]
        r = c.request("GET", "/v2/_catalog?n=2&last=gamma")
        assert r.json()["repositories"] == names[4:] and r.header("Link") is None
        c.close()
    finally:
        srv.stop()


def test_delete_tag_keeps_manifest(client):
    name = unique()
    digest, raw = client.push_image(name, "a")
    client.put_manifest(name, "b", raw)
    r = client.request("DELETE", f"/v2/{name}/manifests/a")
    assert r.status == 202
    assert client.request("GET", f"/v2/{name}/manifests/a").status == 404
    assert client.request("GET", f"/v2/{name}/manifests/{digest}").status == 200
    assert client.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["b"]
    r = client.request("DELETE", f"/v2/{name}/manifests/a")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]


def test_delete_manifest_takes_its_tags(client):
    name = unique()
    digest, raw = client.push_image(name, "a")
    client.put_manifest(name, "b", raw)
    other, _ = client.push_image(name, "c")
    r = client.request("DELETE", f"/v2/{name}/manifests/{digest}")
    assert r.status == 202
    for ref in ("a", "b", digest):
        assert client.request("GET", f"/v2/{name}/manifests/{ref}").status == 404
    assert client.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["c"]
    assert client.request("GET", f"/v2/{name}/manifests/c").status == 200
    r = client.request("DELETE", f"/v2/{name}/manifests/{digest}")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]


def _index(children: list[tuple[str, int, str, str]], media_type: str = OCI_INDEX) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": mt, "digest": d, "size": s, "platform": {"os": "linux", "architecture": arch}}
        for d, s, mt, arch in children]}).encode()


def test_index_and_accept_negotiation(client):
    name = unique()
    amd, amd_raw = client.push_image(name, None, media_type=DOCKER_MANIFEST)
    arm, arm_raw = client.push_image(name, None, media_type=DOCKER_MANIFEST)
    lst = _index([(amd, len(amd_raw), DOCKER_MANIFEST, "amd64"), (arm, len(arm_raw), DOCKER_MANIFEST, "arm64")],
                 DOCKER_LIST)
    assert client.put_manifest(name, "multi", lst, DOCKER_LIST).status == 201
    # a client that knows lists gets the list
    r = client.request("GET", f"/v2/{name}/manifests/multi", headers={"Accept": f"{DOCKER_MANIFEST}, {DOCKER_LIST}"})
    assert r.body == lst and r.header("Content-Type") == DOCKER_LIST
    # no Accept, or */*: what is stored
    assert client.request("GET", f"/v2/{name}/manifests/multi").body == lst
    assert client.request("GET", f"/v2/{name}/manifests/multi", headers={"Accept": "*/*"}).body == lst
    # an old client that only takes schema2 gets this platform's manifest
    r = client.request("GET", f"/v2/{name}/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
    assert r.status == 200 and r.header("Content-Type") == DOCKER_MANIFEST
    assert r.header("Docker-Content-Digest") == amd and r.body == amd_raw

    oci, oci_raw = client.push_image(name, "oci")
    r = client.request("GET", f"/v2/{name}/manifests/oci", headers={"Accept": DOCKER_MANIFEST})
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    r = client.request("GET", f"/v2/{name}/manifests/oci",
                       headers={"Accept": f"{DOCKER_MANIFEST};q=0.5, {OCI_MANIFEST}"})
    assert r.status == 200 and r.body == oci_raw
    # Accept split over several header lines, as Docker sends it
    conn = client._connect()
    conn.putrequest("GET", f"/v2/{name}/manifests/oci")
    conn.putheader("Accept", DOCKER_MANIFEST)
    conn.putheader("Accept", OCI_MANIFEST)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == oci_raw
    conn.close()


def test_referrers(client):
    name = unique()
    subject, subject_raw = client.push_image(name, "app")
    empty = client.push_blob(name, b"{}")

    def artifact(artifact_type: str | None, config_type: str, note: str) -> tuple[str, bytes]:
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": config_type, "digest": empty, "size": 2}, "layers": [],
               "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_raw)},
               "annotations": {"note": note}}
        if artifact_type:
            doc["artifactType"] = artifact_type
        raw = json.dumps(doc).encode()
        r = client.put_manifest(name, sha256(raw), raw)
        assert r.status == 201, r.body
        assert r.header("OCI-Subject") == subject
        return sha256(raw), raw

    sbom, sbom_raw = artifact("application/vnd.example.sbom", "application/vnd.oci.empty.v1+json", "sbom")
    sig, sig_raw = artifact(None, "application/vnd.example.signature", "sig")
    r = client.request("GET", f"/v2/{name}/referrers/{subject}")
    assert r.status == 200 and r.header("Content-Type") == OCI_INDEX
    assert r.header("OCI-Filters-Applied") is None
    idx = r.json()
    assert idx["schemaVersion"] == 2 and idx["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in idx["manifests"]}
    assert by_digest == {
        sbom: {"mediaType": OCI_MANIFEST, "digest": sbom, "size": len(sbom_raw),
               "artifactType": "application/vnd.example.sbom", "annotations": {"note": "sbom"}},
        sig: {"mediaType": OCI_MANIFEST, "digest": sig, "size": len(sig_raw),
              "artifactType": "application/vnd.example.signature", "annotations": {"note": "sig"}},
    }
    r = client.request("GET", f"/v2/{name}/referrers/{subject}?artifactType=application/vnd.example.signature")
    assert r.header("OCI-Filters-Applied") == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sig]
    # no referrers: an empty index, never 404
    r = client.request("GET", f"/v2/{name}/referrers/{sha256(b'none')}")
    assert r.status == 200 and r.json()["manifests"] == []
    r = client.request("GET", f"/v2/{name}/referrers/sha256:bad")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    # a subject that does not exist (yet) is accepted
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}, "layers": [],
           "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(b"future"), "size": 6}}
    raw = json.dumps(doc).encode()
    assert client.put_manifest(name, sha256(raw), raw).status == 201
    # deleting a referrer removes it from the list
    client.request("DELETE", f"/v2/{name}/manifests/{sig}")
    r = client.request("GET", f"/v2/{name}/referrers/{subject}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom]


def test_foreign_layers_need_not_exist(client):
    name = unique()
    cfg = client.push_blob(name, b'{"os":"windows"}')
    raw = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg,
                                 "size": 16},
                      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                                  "digest": sha256(b"windows base"), "size": 100,
                                  "urls": ["https://example.invalid/layer"]}]}).encode()
    assert client.put_manifest(name, "win", raw, DOCKER_MANIFEST).status == 201
