"""Docker's shapes from soko alone: inspect, images, history, rmi, tag and pull/push messages.
(tests/interop/test_docker_cli_shapes.py holds the same outputs beside a real Docker Engine.)"""
from __future__ import annotations

import json
import re
import tarfile

import pytest

INSPECT_KEYS = ["Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Container", "ContainerConfig",
                "DockerVersion", "Author", "Config", "Architecture", "Os", "Size", "VirtualSize", "GraphDriver",
                "RootFS", "Metadata", "Soko"]


def unpacked_bytes(path) -> int:
    """What Docker counts for a layer, computed here independently: file bytes, symlink targets,
    each inode once."""
    total, seen = 0, set()
    with tarfile.open(path) as t:
        for m in t:
            if m.isreg() and m.name not in seen:
                total += m.size
            elif m.issym():
                total += len(m.linkname.encode())
            seen.add(m.name)
    return total


@pytest.fixture
def bb(soko, busybox_rootfs):
    return soko("import", "-m", "base", busybox_rootfs, "bb:1").stdout.strip()


@pytest.fixture
def registry(tmp_path):
    from tests.registry.conftest import RegistryProc

    srv = RegistryProc(tmp_path / "registry").start()
    yield f"localhost:{srv.port}"
    srv.stop()


def test_inspect_has_dockers_keys_sizes_and_precision(soko, bb, busybox_rootfs):
    info = json.loads(soko("inspect", "bb:1").stdout)[0]
    assert list(info) == INSPECT_KEYS
    assert info["Size"] == info["VirtualSize"] == unpacked_bytes(busybox_rootfs)  # not the blob's size
    assert info["Size"] != info["Soko"]["Layers"][0]["size"]
    assert info["Comment"] == "base" and info["RepoDigests"] == [] and info["Parent"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", info["Created"])  # Go's RFC3339Nano
    assert list(info["Config"])[:6] == ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout",
                                        "AttachStderr"]
    assert info["Config"]["Env"] is None and info["ContainerConfig"]["Cmd"] is None
    assert set(info["Soko"]) == {"Digest", "MediaType", "Layers", "History"}
    assert soko("inspect", "-f", "{{.Config.Env}} {{len .RootFS.Layers}} {{.Soko.MediaType}}", "bb:1").stdout == \
        "[] 1 application/vnd.oci.image.manifest.v1+json\n"


def test_repo_digests_are_those_pushed_and_pulled(soko, bb, registry, tmp_path):
    from tests.conftest import SokoCLI

    soko("tag", "bb:1", f"{registry}/team/bb:1")
    assert json.loads(soko("inspect", "bb:1").stdout)[0]["RepoDigests"] == []
    pushed = soko("push", f"{registry}/team/bb:1").stdout.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    info = json.loads(soko("inspect", "bb:1").stdout)[0]
    assert info["RepoDigests"] == [f"{registry}/team/bb@{pushed}"]
    assert soko("images", "--digests", "--format", "{{.Repository}} {{.Digest}}", f"{registry}/team/bb").stdout == \
        f"{registry}/team/bb {pushed}\n"
    # pulled into another store: the digest it was pulled with, and Docker's pull lines
    (tmp_path / "other").mkdir()
    other = SokoCLI(tmp_path / "other")
    out = other("pull", f"{registry}/team/bb:1").stdout.splitlines()
    assert out[0] == "1: Pulling from team/bb"
    assert out[-3:] == [f"Digest: {pushed}", f"Status: Downloaded newer image for {registry}/team/bb:1",
                        f"{registry}/team/bb:1"]
    assert json.loads(other("inspect", f"{registry}/team/bb:1").stdout)[0]["RepoDigests"] == \
        [f"{registry}/team/bb@{pushed}"]
    again = other("pull", f"{registry}/team/bb:1").stdout.splitlines()
    assert again[-2] == f"Status: Image is up to date for {registry}/team/bb:1"
    assert other("pull", "-q", f"{registry}/team/bb:1").stdout == f"{registry}/team/bb:1\n"
    # rmi: the tag, then the repo digest, then the image ID, as Docker prints them
    image_id = json.loads(other("inspect", f"{registry}/team/bb:1").stdout)[0]["Id"]
    assert other("rmi", f"{registry}/team/bb:1").stdout.splitlines() == [
        f"Untagged: {registry}/team/bb:1", f"Untagged: {registry}/team/bb@{pushed}", f"Deleted: {image_id}"]


def test_pull_of_an_unknown_host_says_it_could_not_be_resolved(soko):
    r = soko("pull", "no-such-host.invalid/team/app:1", check=False, timeout=120)
    assert r.returncode == 1
    assert "could not be resolved" in r.stderr and "unknown error" not in r.stderr.lower()
    assert len(r.stderr.strip().splitlines()) == 1


def test_rmi_deletes_by_image_id(soko, bb):
    soko("tag", "bb:1", "bb:2")
    assert soko("rmi", "bb:2").stdout == "Untagged: bb:2\n"  # the image keeps its other tag
    assert soko("rmi", "bb:1").stdout == f"Untagged: bb:1\nDeleted: {bb}\n"  # the ID, not a manifest digest
    assert soko("images", "-q").stdout == ""


def test_one_row_per_image_loaded_from_both_archive_formats(soko, bb, tmp_path):
    for fmt in ("docker", "oci"):
        soko("save", "--format", fmt, "-o", tmp_path / f"{fmt}.tar", "bb:1")
    soko("rmi", "bb:1")
    soko("load", "-i", tmp_path / "docker.tar")
    soko("load", "-i", tmp_path / "oci.tar")
    assert soko("images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}").stdout == f"bb 1 {bb[7:19]}\n"
    assert soko("images", "-a", "-q").stdout == f"{bb[7:19]}\n"
    assert soko("rmi", "bb:1").stdout.splitlines()[-1] == f"Deleted: {bb}"
    assert soko("images", "-q").stdout == ""  # the other manifest of the same image went too


def test_images_filters_reference_and_flags(soko, busybox_rootfs):
    old = soko("import", "--change", "LABEL team=a", busybox_rootfs, "app:old").stdout.strip()
    new = soko("import", "--change", "LABEL team=b", "--change", "ENV X=1", busybox_rootfs, "app:new").stdout.strip()
    soko("tag", "app:new", "other/app:1")
    soko("import", busybox_rootfs).stdout.strip()  # dangling
    fmt = ("--format", "{{.Repository}}:{{.Tag}}")
    rows = lambda *a: soko("images", *fmt, *a).stdout.split()  # noqa: E731
    assert rows() == ["<none>:<none>", "app:new", "other/app:1", "app:old"]  # newest first
    assert rows("app") == ["app:new", "app:old"] and rows("app:old") == ["app:old"]
    assert rows("--filter", "reference=*/app") == ["other/app:1"]
    assert rows("--filter", "reference=app:*", "--filter", "reference=other/*") == ["app:new", "other/app:1", "app:old"]
    assert rows("--filter", "dangling=true") == ["<none>:<none>"]
    assert "<none>:<none>" not in rows("--filter", "dangling=false")
    assert rows("--filter", "label=team=a") == ["app:old"] and rows("--filter", "label=team") == \
        ["app:new", "other/app:1", "app:old"]
    assert rows("--filter", "before=app:new") == ["app:old"]
    assert rows("--filter", "since=app:old", "--filter", "dangling=false") == ["app:new", "other/app:1"]
    ids = soko("images", "-q").stdout.split()
    assert ids.count(new[7:19]) == 2  # a row per tag, as docker images -q prints them
    assert soko("images", "--no-trunc", "-q", "app:old").stdout == f"{old}\n"
    for bad, msg in (("dangling=maybe", "Invalid filter 'dangling=[maybe]'"), ("bogus=1", "Invalid filter 'bogus'")):
        r = soko("images", "--filter", bad, check=False)
        assert r.returncode == 1 and r.stderr.strip() == f"soko: {msg}"
    table = soko("images").stdout.splitlines()
    assert table[0] == "REPOSITORY   TAG       IMAGE ID       CREATED          SIZE"[:len(table[0])] or \
        table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert re.search(r"\s1\.98MB$", table[1])  # Docker's units, the unpacked size


def test_history_sizes_truncation_and_flags(soko, bb, busybox_rootfs, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb:1\nRUN dd if=/dev/zero of=/blob bs=1k count=300 2>/dev/null && "
                                    "echo a-long-tail-of-words-that-docker-cuts-at-45-characters\nENV A=1\n")
    soko("build", "--network", "none", "-t", "hist:1", ctx)
    rows = soko("history", "--format", "{{.Size}}|{{.CreatedBy}}", "hist:1").stdout.splitlines()
    assert rows[0] == "0B|ENV A=1"
    size, created_by = rows[1].split("|")
    assert size == "307kB"  # the 307200 bytes the step added, unpacked
    assert len(created_by) == 45 and created_by.endswith("…")
    assert rows[2] == "1.98MB|"
    raw = soko("history", "-H=false", "--format", "{{.Size}} {{.CreatedSince}}", "hist:1").stdout.splitlines()
    assert raw[1].split()[0] == "307200" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)",
                                                          raw[1].split()[1])
    assert soko("history", "-H=false", "hist:1").stdout.splitlines()[0].split()[:3] == ["IMAGE", "CREATED", "AT"]
    full = soko("history", "--no-trunc", "--format", "{{.CreatedBy}}", "hist:1").stdout.splitlines()[1]
    assert "docker-cuts-at-45-characters" in full
    ids = soko("history", "-q", "hist:1").stdout.split()
    image_id = json.loads(soko("inspect", "hist:1").stdout)[0]["Id"]
    assert ids[0] == image_id[7:19] and set(ids[1:]) == {"<missing>"}
    assert soko("history", "-q", "--no-trunc", "hist:1").stdout.split()[0] == image_id


@pytest.mark.parametrize("target,msg", [
    ("UPPER/case:1", 'Error parsing reference: "UPPER/case:1" is not a valid repository/tag'),
    ("bb:a b", 'Error parsing reference: "bb:a b" is not a valid repository/tag'),
    (f"bb@sha256:{'a' * 64}", "refusing to create a tag with a digest reference"),
])
def test_tag_refuses_as_docker_does(soko, bb, target, msg):
    r = soko("tag", "bb:1", target, check=False)
    assert r.returncode == 1 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd,message", [
    (["images"], "can't evaluate field Foo in type *formatter.imageContext"),
    (["history", "bb:1"], "can't evaluate field Foo in type *image.historyContext"),
    (["inspect", "bb:1"], 'map has no entry for key "Foo"'),  # docker inspect's missingkey=error
    (["version"], 'map has no entry for key "Foo"'),
    (["info"], 'map has no entry for key "Foo"'),
])
def test_bad_templates_are_one_line_errors(soko, bb, cmd, message):
    for template, expected in (("{{.ID", "template parsing error: template: :1: unclosed action"),
                               ("{{range .ID}}", "template parsing error: template: :1: unexpected EOF"),
                               ("{{.Foo}}", message)):
        r = soko(cmd[0], "--format", template, *cmd[1:], check=False)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (cmd, r.stderr)
        assert expected in r.stderr, (cmd, r.stderr)
