"""COPY, ADD and WORKDIR: what lands in the image, with which mode and owner."""
from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading

import pytest

from builder import BuildError
from tests.builder.helpers import ImageFS, do_build, write_context
from tests.tarballs import make_tar


@pytest.fixture
def ctx(tmp_path):
    root = write_context(tmp_path / "ctx", {
        "a.txt": "A", "b.txt": "B", "c.md": "C", "exec.sh": "#!/bin/sh\necho hi\n",
        "dir/one": "1", "dir/sub/two": "2", "dir/.hidden": "h",
    })
    os.chmod(root / "exec.sh", 0o755)
    os.chmod(root / "dir/sub", 0o750)
    os.symlink("one", root / "dir/link")
    return root


def build(store, ctx, text, tag="out", **kw):
    do_build(store, ctx, text, tags=[tag], **kw)
    return ImageFS(store, tag)


def test_files_directories_and_destinations(store, ctx):
    fs = build(store, ctx, """\
FROM busybox
COPY a.txt /file
COPY a.txt b.txt /into/
COPY a.txt /tmp
COPY dir /app
COPY exec.sh rel
WORKDIR /work
COPY c.md .
COPY *.txt /glob/
""")
    assert fs.read("/file") == b"A"
    assert fs.read("/into/a.txt") == b"A" and fs.read("/into/b.txt") == b"B"
    assert fs.read("/tmp/a.txt") == b"A" and fs.mode("/tmp") == 0o1777  # existing dir: into it, mode kept
    assert fs.read("/app/one") == b"1" and fs.read("/app/sub/two") == b"2" and fs.read("/app/.hidden") == b"h"
    assert fs.stat("/app/dir") is None  # the directory's contents, not the directory
    assert fs.readlink("/app/link") == "one"
    assert fs.mode("/app/sub") == 0o750
    assert fs.read("/rel") is not None and fs.mode("/rel") == 0o755
    assert fs.read("/work/c.md") == b"C"
    assert fs.read("/glob/a.txt") == b"A" and fs.stat("/glob/c.md") is None
    assert fs.owner("/app/one") == (0, 0) and fs.owner("/file") == (0, 0)


def test_context_owner_is_root_unless_chown(store, ctx):
    os.chown(ctx / "a.txt", 4242, 4242)
    fs = build(store, ctx, """\
FROM busybox
COPY a.txt /plain
COPY --chown=app:staff a.txt /named
COPY --chown=1234 a.txt /number
COPY --chown=app a.txt /user-only
COPY --chown=nobody:1 dir /owned/
""")
    assert fs.owner("/plain") == (0, 0)
    assert fs.owner("/named") == (1000, 50)
    assert fs.owner("/number") == (1234, 1234)
    assert fs.owner("/user-only") == (1000, 1000)
    assert fs.owner("/owned/sub/two") == (65534, 1) and fs.owner("/owned/sub") == (65534, 1)
    assert fs.owner("/owned") == (65534, 1)  # created by this step, for this owner


def test_chown_unknown_name_fails(store, ctx):
    with pytest.raises(BuildError, match=r"Dockerfile:2: unable to find user ghost"):
        build(store, ctx, "FROM busybox\nCOPY --chown=ghost a.txt /x\n")
    with pytest.raises(BuildError, match=r"unable to find group ghosts"):
        build(store, ctx, "FROM busybox\nCOPY --chown=app:ghosts a.txt /x\n")


def test_chmod_octal_and_symbolic(store, ctx):
    fs = build(store, ctx, """\
FROM busybox
COPY --chmod=640 a.txt /octal
COPY --chmod=u=rwX,go=rX dir /sym/
COPY --chmod=+x a.txt /plusx
""")
    assert fs.mode("/octal") == 0o640
    assert fs.mode("/sym/sub") == 0o755 and fs.mode("/sym/one") == 0o644
    assert fs.mode("/plusx") == 0o755


def test_several_sources_need_a_directory(store, ctx):
    with pytest.raises(BuildError, match="must be a directory and end with a /"):
        build(store, ctx, "FROM busybox\nCOPY a.txt b.txt /notdir\n")


def test_missing_and_ignored_sources(store, ctx):
    (ctx / ".dockerignore").write_text("b.txt\ndir/sub\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: COPY failed: file not found in build context"):
        build(store, ctx, "FROM busybox\nCOPY b.txt /x\n")
    with pytest.raises(BuildError, match="file not found"):
        build(store, ctx, "FROM busybox\nCOPY nomatch* /x/\n")
    fs = build(store, ctx, "FROM busybox\nCOPY . /all/\n")
    assert fs.read("/all/a.txt") == b"A" and fs.stat("/all/b.txt") is None
    assert fs.stat("/all/dir/sub") is None and fs.read("/all/dir/one") == b"1"
    assert fs.read("/all/Dockerfile") is not None and fs.read("/all/.dockerignore") is not None


def test_copy_from_stage_index_and_image(store, ctx):
    fs = build(store, ctx, """\
FROM busybox AS build
COPY --chown=app:app dir /out
FROM scratch
COPY --from=build /out/sub /sub
COPY --from=0 /out/one /one
COPY --from=busybox /bin/busybox /bin/bb
COPY --from=build /out/l* /links/
""")
    assert fs.read("/sub/two") == b"2" and fs.owner("/sub/two") == (1000, 1000)  # owners kept
    assert fs.read("/one") == b"1"
    assert fs.mode("/bin/bb") == 0o755 and fs.stat("/bin/sh") is None
    assert fs.read("/links/link") == b"1"  # a top-level symlink source is followed


HEREDOCS = '''\
FROM busybox
ARG NAME=world
COPY <<EOF /hello.txt
hello ${NAME} "quoted"
EOF
COPY <<-"EOT" <<PLAIN /scripts/
\techo "$NAME"
\tEOT
plain $NAME
PLAIN
COPY --chmod=755 <<EOF /run.sh
#!/bin/sh
EOF
'''


def test_heredocs(store, ctx):
    fs = build(store, ctx, HEREDOCS)
    assert fs.read("/hello.txt") == b'hello world "quoted"\n'
    assert fs.read("/scripts/EOT") == b'echo "$NAME"\n'
    assert fs.read("/scripts/PLAIN") == b"plain world\n"
    assert fs.mode("/hello.txt") == 0o644 and fs.mode("/run.sh") == 0o755


def _tar(members: dict[str, bytes]) -> bytes:
    return make_tar([("file", name, data, 0o640) for name, data in members.items()], uid=7, gid=7)


def test_add_unpacks_local_archives_whatever_the_compression(store, ctx):
    import bz2
    import gzip
    import lzma

    import zstandard

    raw = _tar({"pkg/file": b"payload"})
    (ctx / "a.tar").write_bytes(raw)
    (ctx / "a.tgz").write_bytes(gzip.compress(raw))
    (ctx / "a.tbz").write_bytes(bz2.compress(raw))
    (ctx / "a.txz").write_bytes(lzma.compress(raw))
    (ctx / "a.tzst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (ctx / "fake.tar.gz").write_bytes(b"not an archive")
    fs = build(store, ctx, """\
FROM busybox
ADD a.tar /plain/
ADD a.tgz /gz
ADD a.tbz /bz/
ADD a.txz /xz/
ADD a.tzst /zst/
ADD fake.tar.gz /fake.tar.gz
COPY a.tgz /copied.tgz
""")
    for d in ("plain", "gz", "bz", "xz", "zst"):
        assert fs.read(f"/{d}/pkg/file") == b"payload", d
    assert fs.owner("/gz/pkg/file") == (7, 7) and fs.mode("/gz/pkg/file") == 0o640
    assert fs.read("/fake.tar.gz") == b"not an archive"
    assert fs.read("/copied.tgz")[:2] == b"\x1f\x8b"  # COPY never unpacks


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.txt").write_text("downloaded\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_add_url_with_checksum(store, ctx, http_server):
    good = "sha256:" + hashlib.sha256(b"downloaded\n").hexdigest()
    fs = build(store, ctx, f"""\
FROM busybox
ADD {http_server}/file.txt /dl/
ADD --checksum={good} {http_server}/file.txt /named
""")
    assert fs.read("/dl/file.txt") == b"downloaded\n" and fs.mode("/dl/file.txt") == 0o600
    assert fs.read("/named") == b"downloaded\n"
    bad = "sha256:" + "0" * 64
    with pytest.raises(BuildError, match="does not match --checksum"):
        build(store, ctx, f"FROM busybox\nADD --checksum={bad} {http_server}/file.txt /x\n")
    with pytest.raises(BuildError, match="ADD http"):
        build(store, ctx, f"FROM busybox\nADD {http_server}/missing /x\n")


def test_destination_follows_symlinks_in_the_image(store, ctx, tmp_path):
    base = write_context(tmp_path / "base", {"realdir/keep": "k"})
    os.symlink("/realdir", base / "linkdir")
    do_build(store, base, "FROM busybox\nCOPY . /\n", tags=["withlink"])
    fs = build(store, ctx, "FROM withlink\nCOPY a.txt /linkdir/a.txt\n")
    assert fs.readlink("/linkdir") == "/realdir"
    assert fs.read("/realdir/a.txt") == b"A" and fs.read("/realdir/keep") == b"k"


def test_workdir_commits_a_layer_as_buildkit_does(store, ctx):
    """Every WORKDIR but `/` is a layer: the directories it made, or an empty one (Docker 20.10)."""
    do_build(store, ctx, "FROM busybox\nWORKDIR /tmp\nWORKDIR /new/deep\nUSER app\nWORKDIR mine\n", tags=["wd"])
    fs = ImageFS(store, "wd")
    img = fs.image.config.data
    assert img["config"]["WorkingDir"] == "/new/deep/mine"
    assert fs.mode("/new/deep") == 0o755 and fs.owner("/new/deep") == (0, 0)
    assert fs.owner("/new/deep/mine") == (1000, 1000)  # made for USER app
    assert fs.mode("/tmp") == 0o1777
    hist = [(h["created_by"], h.get("empty_layer", False)) for h in img["history"][-4:]]
    assert hist == [("WORKDIR /tmp", False), ("WORKDIR /new/deep", False), ("USER app", True),
                    ("WORKDIR /new/deep/mine", False)]
    assert len(img["rootfs"]["diff_ids"]) == 4
    assert img["rootfs"]["diff_ids"][1] == EMPTY_LAYER  # /tmp was there: nothing in it
    do_build(store, ctx, "FROM busybox\nWORKDIR /\n", tags=["root"])
    root = store.resolve("root").config.data
    assert root["history"][-1] == {**root["history"][-1], "created_by": "WORKDIR /", "empty_layer": True}


EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # an empty tar


def test_copy_cache_follows_content_not_mtime(store, ctx):
    text = "FROM busybox\nCOPY exec.sh /e\nCOPY dir /d\nCOPY a.txt /a\nENV X=1\n"
    first = do_build(store, ctx, text)
    assert [e.cached for e in first.steps] == [True, False, False, False, False]
    os.utime(ctx / "dir/one", (1, 1))
    again = do_build(store, ctx, text)
    assert all(e.cached for e in again.steps) and again.result.image_id == first.result.image_id
    (ctx / "dir/one").write_text("changed")
    changed = do_build(store, ctx, text)
    assert [e.cached for e in changed.steps] == [True, True, False, False, False]
    os.chmod(ctx / "a.txt", 0o600)
    mode = do_build(store, ctx, text)
    assert [e.cached for e in mode.steps] == [True, True, True, False, False]
    (ctx / "unrelated").write_text("x")
    assert all(e.cached for e in do_build(store, ctx, text).steps)


def test_compression_choices(store, ctx):
    from storage import mediatypes as mt

    for comp, media in (("zstd", mt.OCI_LAYER_ZSTD), ("uncompressed", mt.OCI_LAYER), ("gzip", mt.OCI_LAYER_GZIP)):
        b = do_build(store, ctx, "FROM busybox\nCOPY a.txt /a\n", compression=comp)
        m = store.manifest(b.result.manifest_digest)
        assert m.layers[-1].media_type == media
        assert b.steps[-1].cached == (comp != "zstd")  # a hit, converted to the asked compression


def test_reproducible_with_source_date_epoch(store, ctx):
    text = "FROM busybox\nCOPY dir /d\nCOPY <<EOF /h\nx\nEOF\nWORKDIR /w\n"
    a = do_build(store, ctx, text, source_date_epoch=1700000000)
    b = do_build(store, ctx, text, source_date_epoch=1700000000, no_cache=True)
    assert a.result.image_id == b.result.image_id and a.result.manifest_digest == b.result.manifest_digest


def test_only_the_files_a_step_needs_are_read(store, ctx):
    huge = ctx / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(1 << 40)  # sparse: reading it would take hours
    do_build(store, ctx, "FROM busybox\nENV A=1\n")  # no COPY: the context is not even listed
    fs = build(store, ctx, "FROM busybox\nCOPY a.txt dir /x/\n")
    assert fs.read("/x/a.txt") == b"A" and fs.read("/x/one") == b"1"


def test_variables_in_copy_flags_and_paths(store, ctx):
    (ctx / "$FILE").write_text("dollar")
    fs = build(store, ctx, "FROM busybox AS src\nCOPY a.txt /made/a.txt\nFROM busybox\nARG STAGE=src\n"
                           "ARG OWNER=app\nARG MODE=600\nENV DEST=/dst FILE=a.txt\n"
                           "COPY --from=${STAGE} --chown=$OWNER --chmod=$MODE /made/${FILE} $DEST/\n"
                           "COPY \\$FILE /literal-dollar\n", tag="vars")
    assert fs.read("/dst/a.txt") == b"A" and fs.owner("/dst/a.txt") == (1000, 1000) and fs.mode("/dst/a.txt") == 0o600
    assert fs.read("/literal-dollar") == b"dollar"


def test_onbuild_copy_uses_the_childs_context(store, ctx, tmp_path):
    parent_ctx = write_context(tmp_path / "parent", {})
    do_build(store, parent_ctx, "FROM busybox\nONBUILD COPY a.txt /from-child-context\n", tags=["obparent"])
    fs = build(store, ctx, "FROM obparent\n", tag="obchild")
    assert fs.read("/from-child-context") == b"A"


def test_copy_again_links_unchanged_files_from_its_previous_result(store, ctx):
    from runtime.snapshots import Snapshots, chain_ids

    def snapshot_of(ref: str):
        return Snapshots(store).path(chain_ids(store.resolve(ref).config.diff_ids)[-1])

    text = "FROM busybox\nCOPY dir /d\n"
    for p in (ctx / "dir").rglob("*"):  # older than HashCache's racy window: their digests are trusted
        os.utime(p, ns=(p.lstat().st_mtime_ns - 10**9,) * 2, follow_symlinks=False)
    do_build(store, ctx, text, tags=["v1"])
    old = snapshot_of("v1")
    hidden = os.stat(old / "d/.hidden").st_ino
    (ctx / "dir/one").write_text("changed")
    os.chmod(ctx / "dir/sub/two", 0o600)
    do_build(store, ctx, text, tags=["v2"])
    new = snapshot_of("v2")
    assert new != old
    assert not old.exists()  # taken whole and changed into the new result (reuse.py)
    assert os.stat(new / "d/.hidden").st_ino == hidden  # unchanged: kept
    assert (new / "d/one").read_bytes() == b"changed"             # content changed: written again
    assert stat.S_IMODE(os.stat(new / "d/sub/two").st_mode) == 0o600  # mode changed: written again
    fs = ImageFS(store, "v2")
    assert fs.read("/d/one") == b"changed" and fs.read("/d/.hidden") == b"h" and fs.mode("/d/sub/two") == 0o600
    old_fs = ImageFS(store, "v1")
    assert old_fs.read("/d/one") == b"1" and old_fs.mode("/d/sub/two") == 0o644
