"""The image model, references, the metadata database and the local image store."""
from __future__ import annotations

import json

import pytest

from storage import digests, mediatypes as mt, references
from storage.errors import ImageNotFound, InvalidReference, ManifestError, MetadataError, StorageError
from storage.gc import collect
from storage.images import ImageStore
from storage.metadata import MetadataDB
from storage.model import Descriptor, ImageConfig, Index, Platform, build_index, canonical_json, parse_manifest

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize("text,full,familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("index.docker.io/team/app", "docker.io/team/app:latest", "team/app:latest"),
    ("localhost:5000/team/app:1.2", "localhost:5000/team/app:1.2", "localhost:5000/team/app:1.2"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    (f"quay.io/a/b@{D1}", f"quay.io/a/b@{D1}", f"quay.io/a/b@{D1}"),
    (f"app:v1@{D1}", f"docker.io/library/app:v1@{D1}", f"app:v1@{D1}"),
    ("[::1]:5000/x:y", "[::1]:5000/x:y", "[::1]:5000/x:y"),
    ("Up.io/a:1", "Up.io/a:1", "Up.io/a:1"),  # a dot makes a registry; its name may have capitals
    ("a/b:UP", "docker.io/a/b:UP", "a/b:UP"),  # and so may a tag
])
def test_reference_normalization(text, full, familiar):
    r = references.parse(text)
    assert str(r) == full
    assert r.familiar() == familiar


@pytest.mark.parametrize("bad", ["", "UPPER", "a//b", "a:b:c", "-lead", "app:-tag", f"app@sha256:{'z' * 64}",
                                 "app:" + "t" * 129, " app"])
def test_reference_rejects(bad):
    with pytest.raises(InvalidReference):
        references.parse(bad)


# Non-ASCII letters and digits (which `\w` takes) and a trailing newline (which
# `$` lets through) are outside the distribution-spec's grammar.
BAD_TAGS = ["täg", "t\u0661", "latest\n", "a\nb", "ok\r"]
BAD_NAMES = ["foo/bar\n", "f\u00f6o/bar", "foo\n/bar", "foo/b\u0430r", "foo/bar\r"]


@pytest.mark.parametrize("check,text,ref",
                         [(references.validate_tag, t, f"app:{t}") for t in BAD_TAGS]
                         + [(references.validate_repository, n, f"localhost:5000/{n}:1") for n in BAD_NAMES])
def test_tags_and_names_are_ascii_and_whole(check, text, ref):
    with pytest.raises(InvalidReference):
        check(text)
    with pytest.raises(InvalidReference):
        references.parse(ref)


def test_spec_grammar_accepts_its_edges():
    assert references.validate_tag("_") == "_"
    assert references.validate_tag("A" + "z._-9" * 25 + "xx") == "A" + "z._-9" * 25 + "xx"  # 128
    assert references.validate_repository("a0/b.c/d_e/f__g/h--i") == "a0/b.c/d_e/f__g/h--i"


@pytest.mark.parametrize("text", ["UPPER/case:1", "A_B/c:1", "Upper:1", "localhost/UP:1"])
def test_capitals_outside_a_registry_name_are_refused_as_docker_does(text):
    """Docker takes the first component as a registry only when it has a `.`
    or `:` or is `localhost`; capitals elsewhere are 'must be lowercase'."""
    with pytest.raises(InvalidReference, match="must be lowercase"):
        references.parse(text)


def _manifest(config=D1, layers=(D2,), media_type=mt.OCI_MANIFEST, config_type=mt.OCI_CONFIG):
    return canonical_json({"schemaVersion": 2, "mediaType": media_type,
                           "config": {"mediaType": config_type, "digest": config, "size": 10},
                           "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": d, "size": 5} for d in layers]})


def test_manifest_keeps_exact_bytes():
    raw = b'{\n  "schemaVersion": 2,\n  "config": {"mediaType": "' + mt.OCI_CONFIG.encode() + \
          b'", "digest": "' + D1.encode() + b'", "size": 3},\n  "layers": []\n}\n'
    m = parse_manifest(raw)
    assert m.raw == raw
    assert m.digest == digests.of_bytes(raw)
    assert m.media_type == mt.OCI_MANIFEST  # inferred: mediaType is optional in OCI


@pytest.mark.parametrize("raw,msg", [
    (b"not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 1, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}',
     "schemaVersion must be 2"),
    (_manifest(config="sha256:bad"), "config: invalid sha256 digest"),
    (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                 "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": -1}, "layers": []}).encode(),
     "non-negative"),
    (_manifest(media_type="application/x-unknown"), "unsupported manifest media type"),
    (_manifest(media_type=mt.DOCKER_MANIFEST), "config mediaType must be"),
])
def test_manifest_validation(raw, msg):
    with pytest.raises(ManifestError, match=msg):
        parse_manifest(raw)


def test_content_type_must_agree():
    with pytest.raises(ManifestError, match="does not match"):
        parse_manifest(_manifest(), mt.DOCKER_MANIFEST)


def test_index_platform_selection():
    amd = Descriptor(mt.OCI_MANIFEST, D1, 10, platform=Platform("linux", "amd64"))
    arm = Descriptor(mt.OCI_MANIFEST, D2, 10, platform=Platform("linux", "arm64", "v8"))
    idx = build_index([amd, arm])
    again = parse_manifest(idx.raw)
    assert isinstance(again, Index)
    assert again.select(Platform.parse("linux/arm64")).digest == D2
    assert again.select(Platform.parse("linux/amd64")).digest == D1
    with pytest.raises(ManifestError, match="no manifest for platform linux/s390x"):
        again.select(Platform.parse("linux/s390x"))


def test_metadata_migrations_are_versioned(tmp_path):
    db = MetadataDB(tmp_path / "m.db")
    db.migrate("extra", ["CREATE TABLE extra_a (x INTEGER)"])
    db2 = MetadataDB(tmp_path / "m.db")
    db2.migrate("extra", ["CREATE TABLE extra_a (x INTEGER)", "ALTER TABLE extra_a ADD COLUMN y TEXT"])
    db2.execute("INSERT INTO extra_a(x, y) VALUES(1, 'a')")
    assert db2.one("SELECT version FROM schema_versions WHERE component='extra'")[0] == 2
    assert db2.one("PRAGMA journal_mode")[0] == "wal"
    with pytest.raises(MetadataError, match="newer than this soko"):
        MetadataDB(tmp_path / "m.db").migrate("extra", ["CREATE TABLE extra_a (x INTEGER)"])


def _image(store: ImageStore, payload: bytes, created="2024-01-02T03:04:05Z"):
    layer = store.blobs.put_bytes(payload)
    cfg = ImageConfig.new()
    cfg.diff_ids.append(layer)
    cfg.data["created"] = created
    cfg.history.append({"created": created, "created_by": "test"})
    return store.commit(cfg, [Descriptor(mt.OCI_LAYER, layer, len(payload))])


def test_image_store_tags_resolve_remove(tmp_path):
    store = ImageStore(tmp_path)
    m = _image(store, b"layer-one")
    store.tag("app:1", m.digest)
    store.tag("app:2", m.digest)
    img = store.resolve("app:1")
    assert img.digest == m.digest
    assert img.tags == ["app:1", "app:2"]
    assert store.resolve(img.id[7:19]).digest == m.digest
    assert store.resolve(f"app@{m.digest}").digest == m.digest
    with pytest.raises(ImageNotFound):
        store.resolve("app:3")
    with pytest.raises(StorageError, match="use -f"):
        store.remove(img.id)
    events = store.remove("app:1")
    assert [(e.kind, e.what) for e in events] == [("Untagged", "app:1")]
    events = store.remove("app:2")
    assert [e.kind for e in events] == ["Untagged", "Deleted"]
    assert store.list() == []


def test_add_manifest_checks_blobs(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(ManifestError, match="missing blob"):
        store.add_manifest(_manifest())
    assert list(store.blobs) == []


def test_gc_keeps_referenced_and_young(tmp_path):
    store = ImageStore(tmp_path)
    keep = _image(store, b"keep")
    store.tag("keep:1", keep.digest)
    drop = _image(store, b"drop")
    stray = store.blobs.put_bytes(b"stray")
    assert collect(store).removed == []  # everything is inside the grace period
    report = collect(store, grace=0)
    assert drop.digest in report.removed and stray in report.removed
    assert store.blobs.has(keep.digest) and store.blobs.has(keep.config.digest)
    assert all(store.blobs.has(d.digest) for d in keep.layers)
    store.hold("cache:x", [store.blobs.put_bytes(b"held")])
    assert collect(store, grace=0).removed == []


def test_gc_follows_a_child_the_index_declares_but_the_metadata_does_not_record(tmp_path):
    """A manifest blob stored without a metadata record (its index lists it
    with a manifest media type) is still parsed and followed, whatever its
    first byte."""
    store = ImageStore(tmp_path)
    layer = store.blobs.put_bytes(b"layer")
    cfg = ImageConfig.new()
    cfg.diff_ids.append(layer)
    raw_cfg = cfg.to_bytes()
    config = store.blobs.put_bytes(raw_cfg)
    child = b"\r\n " + json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                   "config": {"mediaType": mt.OCI_CONFIG, "digest": config, "size": len(raw_cfg)},
                                   "layers": [{"mediaType": mt.OCI_LAYER, "digest": layer, "size": 5}]}).encode()
    child_digest = store.blobs.put_bytes(child)
    idx = build_index([Descriptor(mt.OCI_MANIFEST, child_digest, len(child), platform=Platform.host())])
    store.add_index(idx.raw)
    store.tag("multi:1", idx.digest)
    assert collect(store, grace=0).removed == []
    assert {idx.digest, child_digest, config, layer} <= set(store.blobs)
    store.untag("multi:1")
    assert set(collect(store, grace=0).removed) == {idx.digest, child_digest, config, layer}


def test_gc_keeps_every_form_of_a_live_layer_reading_the_layers_table_once(tmp_path):
    """A layer stored in two forms (as imported, and the gzip blob a push made) lives
    and goes as one, for the live set and for the candidates of a removal alike;
    gc reads the layers table for that once (it joined the whole table with itself
    for each)."""
    store = ImageStore(tmp_path)
    keep, drop = _image(store, b"keep"), _image(store, b"drop")
    store.tag("keep:1", keep.digest)
    forms = {}
    for m in (keep, drop):
        layer = m.layers[0].digest
        forms[m.digest] = store.blobs.put_bytes(b"gzip of " + layer.encode())
        store.record_layer(layer, layer, "none", m.layers[0].size)
        store.record_layer(layer, forms[m.digest], "gzip", 20)
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    report = collect(store, grace=0, candidates={drop.digest, drop.config.digest, drop.layers[0].digest})
    store.db.conn.set_trace_callback(None)
    assert set(report.removed) == {drop.digest, drop.config.digest, drop.layers[0].digest, forms[drop.digest]}
    assert store.blobs.has(forms[keep.digest]) and store.blobs.has(keep.layers[0].digest)
    assert len([s for s in statements if s.startswith("SELECT") and "FROM layers" in s]) == 1, statements
