"""Outputs and entry points: --output archives, -f paths, stdin Dockerfiles, events, hostile input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from builder import BuildError, BuildEvent, BuildOptions, DockerfileError, build
from tests.builder.helpers import ImageFS, do_build, write_context
from tests.conftest import REPO
from tests.tarballs import make_tar


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {"a.txt": "A"})


def test_output_archives_load_with_skopeo(store, ctx, tmp_path):
    from builder import Output

    oci, docker = tmp_path / "img-oci.tar", tmp_path / "img-docker.tar"
    b = do_build(store, ctx, "FROM busybox\nCOPY a.txt /a\n", tags=["out:1"],
                 output=[Output.parse(f"type=oci,dest={oci}"), Output.parse(f"type=docker,dest={docker}")])
    for transport, path in (("oci-archive", oci), ("docker-archive", docker)):
        p = subprocess.run(["skopeo", "inspect", "--raw", "--config", f"{transport}:{path}"],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert len(json.loads(p.stdout)["rootfs"]["diff_ids"]) == 2
    with tarfile.open(docker) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["out:1"]
    assert b.result.tags == ["out:1"]


def test_output_parsing():
    from builder import Output

    assert Output.parse("type=docker,dest=/x.tar") == Output("docker", "/x.tar")
    for bad in ("type=local,dest=/x", "type=oci", "dest=/x", "/some/dir", "type=oci,dest=/x,foo=1"):
        with pytest.raises(BuildError):
            Output.parse(bad)


def test_dockerfile_elsewhere_with_its_own_ignore_file(store, ctx, tmp_path):
    write_context(ctx, {"b.txt": "B"})
    df = tmp_path / "build" / "app.Dockerfile"
    df.parent.mkdir()
    df.write_text("FROM busybox\nCOPY . /c/\n")
    (df.parent / "app.Dockerfile.dockerignore").write_text("b.txt\n")
    (ctx / ".dockerignore").write_text("a.txt\n")
    build(store, BuildOptions(context=ctx, dockerfile=df, tags=["f"]))
    fs = ImageFS(store, "f")
    assert fs.read("/c/a.txt") == b"A" and fs.stat("/c/b.txt") is None


def test_dockerfile_text_from_stdin_and_bad_encoding(store, ctx):
    r = build(store, BuildOptions(context=ctx, dockerfile_text=b"FROM busybox\nLABEL from=stdin\n", tags=["s"]))
    assert store.resolve("s").config.config["Labels"] == {"from": "stdin"} and r.tags == ["s:latest"]
    with pytest.raises(DockerfileError, match="not valid UTF-8"):
        build(store, BuildOptions(context=ctx, dockerfile_text=b"FROM busybox\nLABEL x=\xff\xfe\n"))
    with pytest.raises(BuildError, match="cannot find the Dockerfile"):
        build(store, BuildOptions(context=ctx, dockerfile=ctx / "nope"))


def test_events_name_steps_like_buildkit(store, ctx):
    events: list[BuildEvent] = []
    (ctx / "Dockerfile").write_text("FROM busybox AS base\nENV A=1\nFROM base\nRUN echo hi\n")
    build(store, BuildOptions(context=ctx), events.append)
    headers = [e.header() + (" CACHED" if e.cached else "") for e in events if e.kind == "step"]
    assert headers == ["#1 [base 1/2] FROM busybox AS base CACHED", "#2 [base 2/2] ENV A=1",
                       "#3 [stage-1 1/2] FROM base CACHED", "#4 [stage-1 2/2] RUN echo hi"]
    assert [(e.step, e.text) for e in events if e.kind == "output"] == [(4, "hi")]
    done = [e for e in events if e.kind == "done"]
    assert len(done) == 4 and all(e.elapsed >= 0 for e in done)


def test_hostile_context_and_archives(store, ctx, tmp_path):
    os.symlink("/etc/passwd", ctx / "escape")
    os.symlink("../../..", ctx / "up")
    (ctx / "evil.tar").write_bytes(make_tar([("file", "../../evil", b"evil")]))
    with pytest.raises(BuildError, match="file not found"):
        do_build(store, ctx, "FROM busybox\nCOPY escape /x\n")  # the link's target is not in the context
    fs_before = set(os.listdir(tmp_path))
    with pytest.raises(BuildError):
        do_build(store, ctx, "FROM busybox\nADD evil.tar /t/\n")
    assert set(os.listdir(tmp_path)) == fs_before and not (tmp_path / "evil").exists()
    do_build(store, ctx, "FROM busybox\nCOPY ../../a.txt /a\nCOPY up/a.txt /b\n", tags=["h"])
    fs = ImageFS(store, "h")
    assert fs.read("/a") == b"A" and fs.read("/b") == b"A"  # `..` cannot leave the context


def test_temporary_cli_entry(store_root, store, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo from-cli\n")
    p = subprocess.run([sys.executable, "-m", "builder", "--root", str(store_root), "build", "-t", "cli",
                        "--build-arg", "X=1", str(ctx)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "#1 [1/2] FROM busybox" and "#2 from-cli" in lines
    assert lines[-1] == store.resolve("cli").id
    bad = subprocess.run([sys.executable, "-m", "builder", "--root", str(store_root), "build", str(ctx / "nope")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 1 and bad.stderr.startswith("error: build context")
