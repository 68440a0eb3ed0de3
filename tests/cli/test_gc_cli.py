"""`soko gc` against every manifest shape the store can hold: whatever a tag
reaches survives `gc --grace 0` (and `save` gives the same bytes after it);
what no tag reaches goes.

Referrers are decided as the distribution-spec maintainers advise registries
(and as soko's registry gc does): a manifest whose `subject` is a kept
manifest is kept, like a child of a kept index; once its subject goes, it
goes too."""
from __future__ import annotations

import io
import tarfile

import pytest

from storage import mediatypes as mt
from tests.shapes import SHAPES, Layout, shape


def blob_files(root) -> set[str]:
    d = root / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in d.iterdir()} if d.exists() else set()


def archive_blobs(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {f"sha256:{m.name.rsplit('/', 1)[1]}": tf.extractfile(m).read()
                for m in tf.getmembers() if m.isfile() and m.name.startswith("blobs/sha256/")}


def save_all(soko, tmp_path, refs: list[str]) -> dict[tuple[str, str], bytes]:
    """The bytes `soko save` writes for each reference, in both formats."""
    out = {}
    for fmt in ("oci", "docker"):
        for ref in refs:
            path = tmp_path / "saved.tar"
            soko("save", "--format", fmt, "-o", path, ref)
            out[fmt, ref] = path.read_bytes()
    return out


@pytest.mark.parametrize("kind", SHAPES)
def test_gc_keeps_what_a_tag_reaches_in_every_shape(soko, tmp_path, kind):
    lay, _ = shape(kind)
    soko("load", "-i", lay.write(tmp_path / "in.tar"))
    stored = blob_files(soko.root)
    assert stored == set(lay.blobs)  # every blob of the layout was loaded
    refs = ["shape:1"] + [e["digest"] for e in lay.top if "annotations" not in e]  # + referrers, by digest
    before = save_all(soko, tmp_path, refs)
    for ref in refs:  # soko keeps the exact bytes of what it loaded
        for d, blob in archive_blobs(before["oci", ref]).items():
            assert blob == lay.blobs[d], (ref, d)

    out = soko("gc", "--grace", "0").stdout
    assert "Removed 0 blobs" in out, out
    assert blob_files(soko.root) == stored
    assert save_all(soko, tmp_path, refs) == before  # byte for byte

    # Untagged, the same image (its children and referrers too) is garbage.
    soko("rmi", "shape:1")
    soko("gc", "--grace", "0")
    assert blob_files(soko.root) == set()
    assert soko("images", "-q").stdout == ""


def test_a_referrer_does_not_keep_an_untagged_subject_alive_but_a_tagged_one_is_kept(soko, tmp_path):
    """Only tags (and holds) are roots: a referrer that is itself tagged keeps
    its own blobs and its subject (distribution lists `subject` among a
    manifest's references), and nothing else."""
    lay = Layout()
    subject = lay.image("subject")
    lay.add(lay.image("sbom", subject=subject), "docker.io/library/sbom:1")
    lay.add(subject)  # loaded untagged
    stray = Layout()
    stray.add(stray.image("stray"))
    soko("load", "-i", lay.write(tmp_path / "in.tar"))
    soko("load", "-i", stray.write(tmp_path / "stray.tar"))
    out = soko("gc", "--grace", "0").stdout
    assert blob_files(soko.root) == set(lay.blobs), out
    assert "Removed 3 blobs" in out  # the stray image's manifest, config and layer


@pytest.mark.parametrize("kind", ["whitespace-manifest", "bom-manifest", "whitespace-index", "docker-list"])
def test_gc_keeps_what_a_pull_tagged(soko, tmp_path, kind):
    from tests.registry.conftest import RegistryProc

    srv = RegistryProc(tmp_path / "registry").start()
    try:
        lay, top = shape(kind)
        lay.push(srv.client(), "team/shape", top.digest, "1")
        ref = f"127.0.0.1:{srv.port}/team/shape:1"
        soko("pull", ref)
    finally:
        srv.stop()
    stored = blob_files(soko.root)
    before = save_all(soko, tmp_path, [ref])
    for d, blob in archive_blobs(before["oci", ref]).items():
        assert blob == lay.blobs[d]  # the pulled bytes, exactly
    out = soko("gc", "--grace", "0").stdout
    # A pull tags the platform's manifest; the index it came through is kept by no tag.
    gone = {top.digest} if top.media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST) else set()
    assert blob_files(soko.root) == stored - gone, out
    assert save_all(soko, tmp_path, [ref]) == before
