"""A registry root written by main before the metadata interface existed
(tests/registry/data/root-<commit>.json, made by make_old_root.py from that
commit's tree) keeps working: same schema as a root made now, and a real
server serves, extends and collects it."""
from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

from registry.server.gc import collect
from registry.server.metadb import open_metadata

from .conftest import OCI_INDEX, RegistryProc, sha256, unique

DATA = Path(__file__).parent / "data" / "root-e4d743c.json"


def old_root(root: Path) -> dict:
    """Lay the old root out on disk; returns what the JSON holds."""
    saved = json.loads(DATA.read_text())
    for d in (root, root / "blobs", root / "ingest"):
        d.mkdir(mode=0o700, exist_ok=True)
    db = sqlite3.connect(root / "metadata.db")
    db.executescript("\n".join(saved["sql"]))
    db.close()
    for name, data in saved["blobs"].items():
        alg, enc = name.split(":")
        (root / "blobs" / alg).mkdir(mode=0o700, exist_ok=True)
        (root / "blobs" / alg / enc).write_bytes(base64.b64decode(data))
    for name, data in saved["ingest"].items():
        (root / "ingest" / name).write_bytes(base64.b64decode(data))
    return saved


def schema(path: Path) -> list[tuple]:
    c = sqlite3.connect(path)
    rows = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    versions = c.execute("SELECT component, version FROM schema_versions ORDER BY component").fetchall()
    c.close()
    return rows + versions


def test_an_old_root_migrates_to_the_schema_a_new_root_gets(tmp_path):
    old_root(tmp_path / "old")
    before = schema(tmp_path / "old" / "metadata.db")
    open_metadata(tmp_path / "old").close()
    (tmp_path / "new").mkdir()
    open_metadata(tmp_path / "new").close()
    after = schema(tmp_path / "old" / "metadata.db")
    assert after == schema(tmp_path / "new" / "metadata.db")
    # what main made stays as it was, but for the migrations since (3: reg_gc_runs.runner)
    changed = {r[1] if len(r) == 4 else r[0] for r in set(after) ^ set(before)}
    assert changed == {"reg_gc_runs", "registry"}


def test_a_server_serves_extends_and_collects_an_old_root(tmp_path):
    root = tmp_path / "root"
    saved = old_root(root)
    meta = open_metadata(root)
    stats = meta.stats()
    meta.close()
    assert (stats.repositories, stats.tags, stats.gc_runs, stats.uploads) == (2, 5, 1, 1)
    srv = RegistryProc(root).start()
    try:
        c = srv.client()
        assert c.request("GET", "/v2/_catalog").json() == {"repositories": ["library/busybox", "team/app"]}
        assert c.request("GET", "/v2/team/app/tags/list").json()["tags"] == ["latest", "multi", "v1", "v2"]
        index = c.request("GET", "/v2/team/app/manifests/multi", headers={"Accept": OCI_INDEX})
        assert index.status == 200 and index.header("Content-Type") == OCI_INDEX
        one = json.loads(index.body)["manifests"][0]["digest"]
        r = c.request("GET", f"/v2/team/app/manifests/{one}")
        assert r.status == 200 and r.header("Docker-Content-Digest") == one
        assert c.request("GET", "/v2/team/app/manifests/v1").body == r.body
        for layer in json.loads(r.body)["layers"]:
            assert c.request("GET", f"/v2/team/app/blobs/{layer['digest']}").status == 200
        refs = c.request("GET", f"/v2/team/app/referrers/{one}").json()["manifests"]
        assert [x["artifactType"] for x in refs] == ["application/vnd.example.sig"]
        assert refs[0]["annotations"] == {"org.example": "yes"}
        # the session left open by the old server resumes where its bytes end
        upload_id = next(iter(saved["ingest"])).removeprefix("upload-")
        status = c.request("GET", f"/v2/team/app/blobs/uploads/{upload_id}")
        assert status.status == 204 and status.header("Range") == f"0-{len(b'half an upload') - 1}"
        c.request("PATCH", f"/v2/team/app/blobs/uploads/{upload_id}", body=b", and the rest")
        digest = sha256(b"half an upload, and the rest")
        assert c.request("PUT", f"/v2/team/app/blobs/uploads/{upload_id}?digest={digest}").status == 201
        name = unique("new")
        _, raw = c.push_image(name, "v1")
        assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
        c.close()
    finally:
        srv.stop()
    report = collect(root, grace=0, untagged=True)
    assert report.blobs_removed  # the blob no manifest used, the finished upload
    assert sha256(b"a blob no manifest uses") in report.blobs_removed
    meta = open_metadata(root)
    assert meta.stats().gc_runs == 2 and meta.manifest_by_tag("team/app", "v1").digest == one
    meta.close()
