"""The image verbs of CLI.md on a real store, through the real `soko` command."""
from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from tests.tarballs import make_tar, truncated_gzip, write


def store_state(root):
    """Every file under the store with its size: 'unchanged' means this is equal."""
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith("metadata.db"))


@pytest.fixture
def imported(soko, busybox_rootfs):
    out = soko("import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV A=1 B=2", "-m", "first",
               busybox_rootfs, "busybox:demo")
    return out.stdout.strip()


def test_import_images_history_inspect(soko, imported):
    assert imported.startswith("sha256:") and len(imported) == 71
    lines = soko("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split()[:3] == ["busybox", "demo", imported[7:19]]
    assert soko("images", "-q").stdout.split() == [imported[7:19]]
    row = json.loads(soko("images", "--no-trunc", "--format", "json").stdout.splitlines()[0])
    assert row["Repository"] == "busybox" and row["ID"] == imported
    hist = soko("history", "busybox:demo").stdout.splitlines()
    assert hist[0].split()[0] == "IMAGE" and hist[1].startswith(imported[7:19])
    assert "first" in hist[1]
    info = json.loads(soko("inspect", "busybox:demo").stdout)[0]
    assert info["Id"] == imported
    assert info["RepoTags"] == ["busybox:demo"]
    assert info["Config"]["Cmd"] == ["/bin/sh"]
    assert info["Config"]["Env"] == ["A=1", "B=2"]
    assert len(info["RootFS"]["Layers"]) == 1


def test_import_from_stdin_and_compressed(soko, busybox_rootfs, tmp_path):
    plain = busybox_rootfs.read_bytes()
    a = soko("import", "-", "bb:stdin", input=plain).stdout.strip()
    gz = write(tmp_path / "r.tar.gz", gzip.compress(plain))
    zs = write(tmp_path / "r.tar.zst", zstandard.ZstdCompressor().compress(plain))
    b = soko("import", gz, "bb:gz").stdout.strip()
    c = soko("import", zs, "bb:zst").stdout.strip()
    diff_ids = {json.loads(soko("inspect", ref).stdout)[0]["RootFS"]["Layers"][0]
                for ref in ("bb:stdin", "bb:gz", "bb:zst")}
    assert len(diff_ids) == 1  # one uncompressed content, three stored forms
    for image_id, ref in ((a, "bb:stdin"), (b, "bb:gz"), (c, "bb:zst")):
        assert json.loads(soko("inspect", ref).stdout)[0]["Id"] == image_id


def test_tag_rmi_and_gc(soko, imported):
    soko("tag", "busybox:demo", "localhost:5000/team/bb:1")
    assert "localhost:5000/team/bb" in soko("images").stdout
    r = soko("rmi", imported, check=False)
    assert r.returncode == 1 and "use -f" in r.stderr
    assert soko("rmi", "busybox:demo").stdout.strip() == "Untagged: busybox:demo"
    out = soko("rmi", "localhost:5000/team/bb:1").stdout
    assert "Untagged: localhost:5000/team/bb:1" in out and "Deleted: sha256:" in out
    assert soko("images", "-q").stdout.strip() == ""
    assert "Would remove 0" in soko("gc", "--dry-run").stdout  # still within the grace period
    out = soko("gc", "--grace", "0").stdout
    assert "Removed 3 blobs" in out
    assert not list((soko.root / "blobs" / "sha256").iterdir())


def test_errors_are_one_line(soko):
    r = soko("inspect", "nosuch:image", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "soko: no such image: nosuch:image"
    r = soko("tag", "x", "Bad:Name", check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = soko("images", "--bogus", check=False)
    assert r.returncode == 2


@pytest.mark.parametrize("entries,msg", [
    ([("file", "../escape", b"x")], "escapes the root"),
    ([("file", "/etc/abs", b"x")], "escapes the root"),
    ([("symlink", "evil", "/etc"), ("file", "evil/passwd", b"x")], "through the symlink"),
    ([("symlink", "up", "../../.."), ("file", "up/tmp/x", b"x")], "through the symlink"),
    ([("hardlink", "h", "../../etc/shadow")], "escapes the root"),
])
def test_import_refuses_hostile_entries(soko, imported, tmp_path, entries, msg):
    before = store_state(soko.root)
    bad = write(tmp_path / "bad.tar", make_tar([("dir", "etc"), *entries]))
    r = soko("import", bad, "evil:1", check=False)
    assert r.returncode == 1
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert store_state(soko.root) == before
    assert "evil" not in soko("images").stdout


def test_import_truncated_gzip(soko, imported, busybox_rootfs, tmp_path):
    before = store_state(soko.root)
    bad = write(tmp_path / "t.tar.gz", truncated_gzip(busybox_rootfs.read_bytes()))
    r = soko("import", bad, "trunc:1", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "soko: truncated gzip stream"
    assert store_state(soko.root) == before


@pytest.mark.parametrize("target,msg", [
    ("app:täg", "invalid reference"),                  # a non-ASCII letter (`\w` took it)
    ("app:t\u0661", "invalid reference"),              # a non-ASCII digit
    ("team/app:latest\n", "invalid reference"),        # a trailing newline (`$` let it through)
    ("team/app\n", "invalid reference"),
    ("UPPER/case:1", "repository name must be lowercase"),  # Docker: no registry, so lowercase
    ("A_B/c:1", "repository name must be lowercase"),
])
def test_tag_refuses_what_docker_refuses(soko, imported, target, msg):
    listing = ("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    before = soko(*listing).stdout
    r = soko("tag", "busybox:demo", target, check=False)
    assert r.returncode == 1, r.stdout
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert soko(*listing).stdout == before  # no tag was written


def test_pull_refuses_a_bad_reference_before_any_request(soko):
    """The reference is checked before soko talks to the registry: a listening
    socket sees no connection at all."""
    import select
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        host = f"127.0.0.1:{sock.getsockname()[1]}"
        for ref in (f"{host}/app:täg", f"{host}/app:latest\n", f"{host}/UPPER/case:1", f"{host}/f\u00f6o:1"):
            r = soko("pull", ref, check=False, timeout=60)  # a request would hang: nobody answers
            assert r.returncode == 1 and "invalid reference" in r.stderr, (ref, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert select.select([sock], [], [], 0)[0] == []  # nobody knocked
    assert soko("images", "-q").stdout == ""


def _rows(soko) -> list[list[str]]:
    return [line.split()[:3] for line in soko("images").stdout.splitlines()[1:]]


@pytest.mark.parametrize("kind", ["oci-index", "nested-index", "docker-list"])
def test_images_lists_a_multi_platform_index_once(soko, tmp_path, kind):
    """As Docker does: the index is the image; its platform manifests are
    not `<none>` rows of their own."""
    from tests.shapes import shape

    lay, top = shape(kind)
    soko("load", "-i", lay.write(tmp_path / "in.tar"))
    assert _rows(soko) == [["shape", "1", top.digest[7:19]]]
    rows = [json.loads(line) for line in
            soko("images", "--no-trunc", "--format", "json", env={"TZ": "UTC"}).stdout.splitlines()]
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in rows] == [("shape", "1", top.digest)]
    assert rows[0]["CreatedAt"] == "2024-01-02 03:04:05 +0000 UTC"  # the platform image's
    assert soko("images", "-q").stdout.split() == [top.digest[7:19]]
    soko("tag", "shape:1", "again:2")
    assert sorted(_rows(soko)) == [["again", "2", top.digest[7:19]], ["shape", "1", top.digest[7:19]]]
    soko("rmi", "shape:1")
    soko("rmi", "again:2")
    assert _rows(soko) == []  # its platform manifests went with it


def test_images_lists_an_untagged_index_once(soko, tmp_path):
    from tests.shapes import Layout, other_platform

    lay = Layout()
    top = lay.add(lay.index([lay.image("host"), lay.image("other", plat=other_platform())]))
    soko("load", "-i", lay.write(tmp_path / "in.tar"))
    assert _rows(soko) == [["<none>", "<none>", top.digest[7:19]]]


def test_images_lists_a_pulled_multi_platform_image_once(soko, tmp_path):
    """A pull tags the platform's manifest and records the index it came
    through: one row, the tagged image."""
    from tests.registry.conftest import RegistryProc
    from tests.shapes import shape

    lay, top = shape("oci-index")
    srv = RegistryProc(tmp_path / "registry").start()
    try:
        lay.push(srv.client(), "team/shape", top.digest, "1")
        out = soko("pull", f"127.0.0.1:{srv.port}/team/shape:1").stdout
    finally:
        srv.stop()
    assert out.split("Digest: ")[1].split()[0] == top.digest  # what was pulled, as Docker says
    rows = [json.loads(line) for line in soko("images", "--no-trunc", "--format", "json").stdout.splitlines()]
    child = json.loads(soko("inspect", f"127.0.0.1:{srv.port}/team/shape:1").stdout)[0]
    assert child["Soko"]["Digest"] != top.digest  # the platform's manifest is the image
    assert [(r["Repository"], r["Tag"], r["Digest"], r["ID"]) for r in rows] == \
        [(f"127.0.0.1:{srv.port}/team/shape", "1", top.digest, child["Id"])]


def test_rmi_of_an_index_keeps_what_another_index_or_a_tag_still_names(soko, tmp_path):
    from tests.shapes import Layout, other_platform

    lay = Layout()
    shared, tagged = lay.image("shared"), lay.image("tagged-child", plat=other_platform())
    lay.add(lay.index([shared, tagged]), "docker.io/library/first:1")
    lay.add(lay.index([shared, lay.image("second-other", plat=other_platform())]), "docker.io/library/second:1")
    soko("load", "-i", lay.write(tmp_path / "in.tar"))
    soko("tag", tagged.digest, "child:1")
    soko("rmi", "first:1")
    assert sorted(r[0] for r in _rows(soko)) == ["child", "second"]
    for digest in (shared.digest, tagged.digest):  # still images of the store
        assert json.loads(soko("inspect", digest).stdout)[0]["Soko"]["Digest"] == digest
