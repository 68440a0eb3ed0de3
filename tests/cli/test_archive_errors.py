"""Broken and hostile archives: a one-line error, exit 1, the store unchanged."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.cli.test_images_cli import store_state
from tests.tarballs import truncated_gzip, write


@pytest.fixture
def saved(soko, busybox_rootfs, tmp_path):
    soko("import", busybox_rootfs, "busybox:keep")
    paths = {}
    for fmt in ("docker", "oci"):
        paths[fmt] = tmp_path / f"{fmt}.tar"
        soko("save", "--format", fmt, "-o", paths[fmt], "busybox:keep")
    return paths


def rewrite(src, dest, edit):
    """Copy a tar, letting `edit(name, data)` return new bytes or None to drop the entry."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if data is not None:
                data = edit(m.name, data)
                if data is None:
                    continue
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
            else:
                tout.addfile(m)
    return dest


def _fails(soko, path, msg):
    before = store_state(soko.root)
    images = soko("images", "-q").stdout
    r = soko("load", "-i", path, check=False)
    assert r.returncode == 1, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert msg in r.stderr
    assert store_state(soko.root) == before
    assert soko("images", "-q").stdout == images


def test_docker_archive_missing_layer(soko, saved, tmp_path):
    entries = json.loads(tarfile.open(saved["docker"]).extractfile("manifest.json").read())
    layer = entries[0]["Layers"][0]
    bad = rewrite(saved["docker"], tmp_path / "bad.tar", lambda n, d: None if n == layer else d)
    soko("rmi", "busybox:keep")
    _fails(soko, bad, "is missing from the archive")


def test_manifest_naming_wrong_digest(soko, saved, tmp_path):
    """The manifest is edited to name a layer that is not there: its own
    digest no longer matches what index.json says (its size still does)."""
    def edit(name, data):
        if name.startswith("blobs/"):
            try:
                obj = json.loads(data)
            except ValueError:
                return data
            if isinstance(obj, dict) and "layers" in obj and "config" in obj:
                obj["layers"][0]["digest"] = "sha256:" + "e" * 64
                edited = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
                assert len(edited) == len(data)
                return edited
        return data

    bad = rewrite(saved["oci"], tmp_path / "bad.tar", edit)
    soko("rmi", "busybox:keep")
    _fails(soko, bad, "does not match its digest")


def test_layer_with_wrong_content(soko, saved, tmp_path):
    index = json.loads(tarfile.open(saved["oci"]).extractfile("index.json").read())
    mdigest = index["manifests"][0]["digest"]
    manifest = json.loads(tarfile.open(saved["oci"]).extractfile("blobs/sha256/" + mdigest[7:]).read())
    layer = "blobs/sha256/" + manifest["layers"][0]["digest"][7:]
    flip = lambda n, d: d[:5000] + bytes([d[5000] ^ 1]) + d[5001:] if n == layer else d  # noqa: E731
    bad = rewrite(saved["oci"], tmp_path / "bad.tar", flip)
    soko("rmi", "busybox:keep")
    _fails(soko, bad, "digest mismatch")


def test_not_an_archive_and_truncated(soko, saved, tmp_path):
    _fails(soko, write(tmp_path / "junk.tar", b"this is not a tar" * 100), "not a tar archive")
    _fails(soko, write(tmp_path / "t.tar.gz", truncated_gzip(saved["docker"].read_bytes())), "truncated gzip")
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    _fails(soko, empty, "neither a docker-archive nor an OCI layout")


@pytest.mark.parametrize("fmt", ["oci", "docker"])
@pytest.mark.parametrize("missing", ["config", "layer"])
def test_save_with_a_blob_gone_fails_in_one_line(soko, saved, tmp_path, fmt, missing):
    """A store that lost a blob (a disk error, a hand-made deletion): save
    names the blob in one line, with no traceback from a half-written tar
    stream after it, and leaves no file behind."""
    info = json.loads(soko("inspect", "busybox:keep").stdout)[0]
    gone = info["Id"] if missing == "config" else info["Soko"]["Layers"][0]["digest"]
    (soko.root / "blobs" / "sha256" / gone[7:]).unlink()
    out = tmp_path / "out" / "x.tar"
    out.parent.mkdir()
    r = soko("save", "--format", fmt, "-o", out, "busybox:keep", check=False)
    assert r.returncode == 1
    assert r.stderr == f"soko: blob not found: {gone}\n"
    assert list(out.parent.iterdir()) == []


def _resize(path: list, delta: int):
    """A manifest rewrite: the descriptor at `path` (e.g. ["layers", 0]) claims `delta` bytes more."""
    def edit(raw: bytes) -> bytes:
        obj = json.loads(raw)
        desc = obj
        for key in path:
            desc = desc[key]
        desc["size"] += delta
        return json.dumps(obj).encode()
    return edit


@pytest.mark.parametrize("delta", [-1, 1], ids=["blob-longer-than-declared", "blob-shorter"])
@pytest.mark.parametrize("where", ["index.json", "config", "layer", "index-child"])
def test_load_refuses_a_blob_whose_size_is_not_its_descriptors(soko, saved, tmp_path, where, delta):
    """Digest right, size wrong by one byte either way: refused in one line,
    the store unchanged."""
    from storage.model import Platform
    from tests.shapes import Layout

    lay = Layout()
    if where == "index.json":
        desc = lay.image("sized")
        lay.top.append({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size + delta})
    elif where == "index-child":
        desc = lay.image("sized")
        child = type(desc)(desc.media_type, desc.digest, desc.size + delta, platform=Platform.host())
        lay.add(lay.index([child]))
    else:
        lay.add(lay.image("sized", raw=_resize(["config"] if where == "config" else ["layers", 0], delta)))
    _fails(soko, lay.write(tmp_path / "sized.tar"), "size")
