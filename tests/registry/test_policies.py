"""Storage policies of `soko serve`: namespace quotas, immutable tags,
retention (online gc and `soko gc --registry --config`) and the audit log."""
from __future__ import annotations

import datetime
import json
import time

from .conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, POSTGRES, SQLITE, sha256, unique
from .teams import PASSWORDS, Tokens, basic, team_config
from .test_gc import blob_file
from .tomlw import dumps

METADATA_BACKENDS = (SQLITE, POSTGRES)


def _manifest(layers: list[bytes], cfg: bytes) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": sha256(cfg), "size": len(cfg)},
                       "layers": [{"mediaType": OCI_LAYER, "digest": sha256(d), "size": len(d)} for d in layers]
                       }).encode()


def test_quotas_refuse_a_push_past_them_and_change_nothing(fresh_server):
    cfg, layer = b'{"os":"linux","architecture":"amd64"}', b"L" * 600
    manifest = _manifest([layer], cfg)
    mquota = len(cfg) + len(layer) + len(manifest) - 1  # the manifest is one byte too many
    srv = fresh_server.configure({"quotas": {"q": 3000, "m": mquota, "other": 10}}).start()
    c = srv.client()
    a = b"a" * 1000
    c.push_blob("q/one", a)
    # a blob linked twice in the namespace counts once
    assert c.request("POST", f"/v2/q/two/blobs/uploads/?mount={sha256(a)}&from=q/one").status == 201
    c.push_blob("q/two", b"b" * 1500)  # 2500 of 3000
    over = b"c" * 1000
    r = c.request("POST", f"/v2/q/two/blobs/uploads/?digest={sha256(over)}", body=over)
    assert r.status == 403 and r.codes == ["DENIED"]
    message = r.json()["errors"][0]["message"]
    assert "quota exceeded: namespace 'q' uses 2500 of its 3000 bytes" in message and "1000 more" in message
    assert c.request("HEAD", f"/v2/q/two/blobs/{sha256(over)}").status == 404
    # chunked: refused at the closing PUT, the session and its data are gone
    loc = c.request("POST", "/v2/q/three/blobs/uploads/").header("Location")
    assert c.request("PATCH", loc, body=over, headers={"Content-Type": "application/octet-stream"}).status == 202
    r = c.request("PUT", f"{loc}?digest={sha256(over)}")
    assert r.status == 403 and r.codes == ["DENIED"]
    assert c.request("GET", loc).status == 404
    assert not (srv.root / "ingest" / f"upload-{loc.rsplit('/', 1)[1]}").exists()
    # a mount from elsewhere is a push too
    c.push_blob("elsewhere/x", over)
    r = c.request("POST", f"/v2/q/two/blobs/uploads/?mount={sha256(over)}&from=elsewhere/x")
    assert r.status == 403 and r.codes == ["DENIED"]
    assert c.request("HEAD", f"/v2/q/two/blobs/{sha256(over)}").status == 404
    # exactly the quota still fits (the refusals left the usage as it was); other namespaces are their own
    c.push_blob("q/two", b"d" * 500)
    assert c.request("POST", f"/v2/other/x/blobs/uploads/?digest={sha256(b'y' * 11)}", body=b"y" * 11).status == 403
    # the manifest PUT is checked too
    c.push_blob("m/app", cfg)
    c.push_blob("m/app", layer)
    r = c.put_manifest("m/app", "v1", manifest)
    assert r.status == 403 and r.codes == ["DENIED"] and "namespace 'm'" in r.json()["errors"][0]["message"]
    assert c.request("GET", "/v2/m/app/tags/list").json()["tags"] == []
    c.close()


def test_immutable_tags(fresh_server):
    srv = fresh_server.configure({"immutable": [{"repository": "rel/*", "tags": "v*"}]}).start()
    c = srv.client()
    name = unique("rel/app")
    first, raw = c.push_image(name, "v1")
    assert c.put_manifest(name, "v1", raw).status == 201  # the same manifest again is no overwrite
    second, raw2 = c.push_image(name, "latest")
    for how in (lambda: c.put_manifest(name, "v1", raw2),
                lambda: c.request("PUT", f"/v2/{name}/manifests/{second}?tag=v1", body=raw2,
                                  headers={"Content-Type": OCI_MANIFEST})):
        r = how()
        assert r.status == 403 and r.codes == ["DENIED"]
        msg = r.json()["errors"][0]["message"]
        assert f"tag {name}:v1 is immutable" in msg and "repository='rel/*'" in msg and "tags='v*'" in msg
    for ref in ("v1", first):
        r = c.request("DELETE", f"/v2/{name}/manifests/{ref}")
        assert r.status == 403 and r.codes == ["DENIED"], ref
    assert c.request("GET", f"/v2/{name}/manifests/v1").header("Docker-Content-Digest") == first
    # tags the rule does not name move and go as usual
    third, raw3 = c.push_image(name, None)
    assert c.put_manifest(name, "latest", raw3).status == 201
    assert c.request("DELETE", f"/v2/{name}/manifests/latest").status == 202
    assert c.request("DELETE", f"/v2/{name}/manifests/{second}").status == 202
    other = unique("other/app")
    c.push_image(other, "v1")
    assert c.put_manifest(other, "v1", raw3).status in (201, 400)  # not immutable there (its blobs may be missing)
    c.close()


def _tags(c, name):
    return sorted(c.request("GET", f"/v2/{name}/tags/list").json()["tags"])


def test_retention_in_online_gc(fresh_server):
    srv = fresh_server.configure({"retention": [{"repository": "ci/*", "keep_last": 2}],
                                  "immutable": [{"repository": "ci/*", "tags": "keep-*"}],
                                  # grace: a pushed blob is unreferenced until its manifest arrives;
                                  # with 0 a busy machine lets gc take it in between (seen: 400 BLOB_UNKNOWN)
                                  "gc": {"interval": 0.3, "grace": 3}}).start()
    c = srv.client()
    name, spared = unique("ci/app"), unique("dev/app")
    pushed = {}
    for tag in ("keep-me", "t1", "t2", "t3", "t4"):
        pushed[tag] = c.push_image(name, tag)
        c.push_image(spared, tag)
        time.sleep(0.02)  # distinct push times
    deadline = time.time() + 30
    while _tags(c, name) != ["keep-me", "t3", "t4"] and time.time() < deadline:
        time.sleep(0.2)
    assert _tags(c, name) == ["keep-me", "t3", "t4"]
    assert len(_tags(c, spared)) == 5
    gone_digest, gone_raw = pushed["t1"]
    while c.request("HEAD", f"/v2/{name}/manifests/{gone_digest}").status != 404 and time.time() < deadline:
        time.sleep(0.2)
    assert c.request("HEAD", f"/v2/{name}/manifests/{gone_digest}").status == 404
    layer = json.loads(gone_raw)["layers"][0]["digest"]
    while blob_file(srv.root, layer).exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not blob_file(srv.root, layer).exists()  # the space really came back
    assert c.request("GET", f"/v2/{name}/manifests/t4").status == 200
    c.close()


def test_retention_by_age_with_soko_gc(fresh_server, soko, tmp_path):
    srv = fresh_server.start()
    c = srv.client()
    name = unique("ci/old")
    for tag in ("t1", "t2", "t3"):
        c.push_image(name, tag)
    c.close()
    srv.stop()
    day = 86400
    # as if pushed 10 and 3 days ago
    srv.sql("UPDATE reg_tags SET updated=? WHERE repo=? AND tag='t1'", (time.time() - 10 * day, name))
    srv.sql("UPDATE reg_tags SET updated=? WHERE repo=? AND tag='t2'", (time.time() - 3 * day, name))
    cfg = tmp_path / "reg.toml"
    cfg.write_text(dumps({"root": str(srv.root), "retention": [{"repository": "ci/**", "keep_days": 5}],
                          **({"metadata": {"url": srv.metadata}} if srv.metadata else {})}))
    dry = soko("gc", "--registry", "--config", cfg, "--grace", "0", "--dry-run")
    assert f"Would remove tag (retention): {name}:t1" in dry.stdout and "t2" not in dry.stdout
    out = soko("gc", "--registry", "--config", cfg, "--grace", "0")
    assert f"Removed tag (retention): {name}:t1" in out.stdout and "1 tags by retention" in out.stdout
    srv.start()
    c = srv.client()
    assert _tags(c, name) == ["t2", "t3"]
    c.close()


def test_audit_log(fresh_server, tmp_path):
    log = tmp_path / "audit" / "audit.jsonl"
    srv = fresh_server.configure(team_config(token={}, audit_log=str(log))).start()
    tokens = Tokens(srv)
    name = unique("team/audited")
    alice = tokens.client("alice", [f"repository:{name}:pull,push,delete"])  # a login
    digest, raw = alice.push_image(name, "v1")
    assert alice.request("GET", f"/v2/{name}/manifests/v1").status == 200
    bob = srv.client(auth=basic("bob", PASSWORDS["bob"]))
    assert bob.request("PUT", f"/v2/{name}/manifests/v2", body=raw,
                       headers={"Content-Type": OCI_MANIFEST}).status == 403
    assert tokens.get("bob", "wrong")[0] == 401
    assert alice.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    srv.stop()
    assert log.stat().st_mode & 0o077 == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    for e in lines:
        assert e["address"] == "127.0.0.1" and e["outcome"] in ("ok", "failed", "denied")
        when = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
        assert abs(when.timestamp() - time.time()) < 120
        assert e.get("target") != "blob"  # layers are not listed, the manifest names the image
    seen = [(e["actor"], e["action"], e.get("repository"), e.get("tag"), e.get("digest"), e["outcome"])
            for e in lines]
    assert seen == [
        ("alice", "login", None, None, None, "ok"),
        ("alice", "push", name, "v1", digest, "ok"),
        ("alice", "pull", name, "v1", digest, "ok"),
        ("bob", "login", None, None, None, "ok"),  # Basic straight to the registry: checked once, then cached
        ("bob", "denied", name, None, None, "denied"),
        ("bob", "login", None, None, None, "failed"),
        ("alice", "delete", name, None, digest, "ok"),
    ], seen
    assert lines[4]["detail"] == "push" and lines[4]["method"] == "PUT"
