"""The same Dockerfile and context built by soko and by Docker Engine's BuildKit: file trees compared.

Docker 20.10's built-in Dockerfile frontend has RUN --mount (all types) but not the newer COPY/ADD
flags (--link, --parents, --exclude, --checksum, git sources), so those are compared with the
Dockerfile that means the same thing in Docker's dialect (each case says what stands in for what).
Trees are compared by path, type, mode, owner, content digest and link target; mtimes are left out
(BuildKit and soko both keep source mtimes, but a RUN's new files differ by when they ran).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.builder.helpers import do_build, import_busybox, write_context
from tests.builder.servers import HTTPServer
from tests.conftest import need_root

pytestmark = [pytest.mark.root, pytest.mark.interop]


@pytest.fixture
def store(store_root, busybox_rootfs):
    need_root()
    from storage.images import ImageStore

    s = ImageStore(store_root)
    import_busybox(s, busybox_rootfs, "busybox:local")
    return s


def tree(store, ref: str, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path of the image's merged filesystem with what defines it (mtime left out)."""
    from tests.interop.parity import tree as full_tree

    return {p: v[:5] for p, v in full_tree(store, ref).items()
            if not any(p == s or p.startswith(s + "/") for s in skip)}


def docker_tree(docker_engine, store, tmp_path: Path, ctx: Path, dockerfile: str, tag: str, *args: str,
                skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    (ctx / "Dockerfile.docker").write_text(dockerfile)
    docker_engine("build", "--network", "none", *args, "-f", ctx / "Dockerfile.docker", "-t", tag, ctx)
    archive = tmp_path / f"{tag.replace(':', '_')}.tar"
    docker_engine("save", "-o", archive, tag)
    docker_engine("rmi", tag)
    from storage.archives import load

    load(store, archive)
    return tree(store, tag, skip)


def diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@pytest.fixture
def ctx(tmp_path):
    c = write_context(tmp_path / "ctx", {"f": "file\n", "src/a.txt": "a\n", "src/b.log": "b\n", "src/tmp/t": "t\n",
                                         "x/a.txt": "xa\n", "y/a.txt": "ya\n", ".dockerignore": "Dockerfile*\n"})
    os.chmod(c / "src/a.txt", 0o640)
    os.chmod(c / "x", 0o750)
    return c


def test_run_mounts_leave_the_same_tree_as_docker(store, docker_engine, ctx, tmp_path):
    (tmp_path / "secret").write_text("not-in-any-layer")
    df = """\
FROM busybox:local AS stage
RUN mkdir -p /out && echo staged > /out/s
FROM busybox:local
RUN --mount=type=bind,target=/ctx cp /ctx/f /from-bind && cp -a /ctx/src /copied
RUN --mount=type=bind,from=stage,source=/out,target=/mnt/stage/deep cat /mnt/stage/deep/s > /from-stage
RUN --mount=type=cache,target=/var/cache/thing,id=difftest echo x > /var/cache/thing/x && echo cache > /after-cache
RUN --mount=type=tmpfs,target=/scratch/tmp echo y > /scratch/tmp/y && echo tmpfs > /after-tmpfs
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size
RUN --mount=type=secret,id=tok,target=/etc/deep/key,mode=0444 cat /etc/deep/key | wc -c > /secret-size-2
WORKDIR /app
RUN --mount=type=bind,source=src,target=rel ls rel > listing
"""
    from builder.secrets import SecretSource

    (ctx / "Dockerfile").write_text(df)
    do_build(store, ctx, None, tags=["soko-mounts"], network="none",
             secrets=[SecretSource("tok", str(tmp_path / "secret"))])
    mine = tree(store, "soko-mounts")
    theirs = docker_tree(docker_engine, store, tmp_path, ctx, df, "docker-mounts:1", "--secret",
                         f"id=tok,src={tmp_path / 'secret'}")
    # Docker 20.10's BuildKit (v0.8) still leaves the empty directories it made for mount targets in
    # the layer; BuildKit's mount stub cleaner (and soko) take them out. That is the only difference.
    stubs = {"/ctx", "/mnt", "/mnt/stage", "/mnt/stage/deep", "/var/cache", "/var/cache/thing", "/scratch",
             "/scratch/tmp", "/run", "/run/secrets", "/etc/deep", "/app/rel"}
    d = diff(mine, theirs)
    assert set(d) == stubs, d
    assert all(a is None and b == (stat.S_IFDIR, "0o755", 0, 0, None) for a, b in d.values())


@pytest.mark.parametrize("case, soko_df, docker_df, dockerignore", [
    # --parents: the parents are written out by hand in Docker's dialect
    ("parents", "COPY --parents x/a.txt y/a.txt /p/\n",
     "COPY x/a.txt /p/x/\nCOPY y/a.txt /p/y/\nRUN chmod 0750 /p/x\n", None),
    # --exclude: the same files kept out through .dockerignore
    ("exclude", "COPY --exclude=*.log --exclude=tmp src /d/\n", "COPY src /d/\n", "Dockerfile*\nsrc/*.log\nsrc/tmp\n"),
    # --link on a base without symlinks in the way: the same tree as a plain COPY
    ("link", "COPY --link f src /l/\n", "COPY f src /l/\n", None),
])
def test_copy_flags_match_their_docker_equivalent(store, docker_engine, ctx, tmp_path, case, soko_df, docker_df,
                                                  dockerignore):
    (ctx / "Dockerfile").write_text("FROM busybox:local\n" + soko_df)
    do_build(store, ctx, None, tags=[f"soko-{case}"])
    mine = tree(store, f"soko-{case}")
    if dockerignore:
        (ctx / ".dockerignore").write_text(dockerignore)
    theirs = docker_tree(docker_engine, store, tmp_path, ctx, "FROM busybox:local\n" + docker_df, f"docker-{case}:1")
    assert diff(mine, theirs) == {}


def test_add_url_with_checksum_matches_docker_add_url(store, docker_engine, ctx, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.bin").write_bytes(b"downloaded\n")
    srv = HTTPServer(root)
    try:
        digest = "sha256:" + hashlib.sha256(b"downloaded\n").hexdigest()
        (ctx / "Dockerfile").write_text(f"FROM busybox:local\nADD --checksum={digest} {srv.url}/file.bin /dl/\n")
        do_build(store, ctx, None, tags=["soko-url"])
        mine = tree(store, "soko-url")
        theirs = docker_tree(docker_engine, store, tmp_path, ctx, f"FROM busybox:local\nADD {srv.url}/file.bin /dl/\n",
                             "docker-url:1", "--network", "host")
    finally:
        srv.close()
    assert diff(mine, theirs) == {}
    assert mine["/dl/file.bin"][1] == "0o600"
