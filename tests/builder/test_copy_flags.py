"""COPY --link/--parents/--exclude and ADD --checksum, URLs (cached by validators) and git repositories."""
from __future__ import annotations

import hashlib
import os

import pytest

from builder import StepError
from storage.errors import ImageNotFound
from tests.builder.helpers import ImageFS, do_build, write_context
from tests.builder.servers import GitDaemon, GitRepo, HTTPServer, self_signed


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {
        "f": "file\n", "x/a.txt": "xa\n", "y/a.txt": "ya\n", "x/y/z/b.txt": "b\n", "x/y/z/c.md": "c\n",
        "dir/keep.txt": "keep\n", "dir/drop.log": "drop\n", "dir/tmp/t": "t\n", "dir/sub/more.log": "more\n",
        "home.txt": "home\n", "homework.md": "hw\n", "homes/inner.txt": "inner\n"})


def steps_cached(b) -> list[bool]:
    return [s.cached for s in b.steps if not s.instruction.startswith("FROM")]


# -- --link ------------------------------------------------------------------------------------
def test_link_layer_is_reused_on_a_changed_base_without_running(store, ctx):
    df = "FROM busybox\nRUN echo {} > /base\nCOPY --link f x/ /dst/\n"
    first = do_build(store, ctx, df.format("one"), tags=["l1"])
    second = do_build(store, ctx, df.format("two"), tags=["l2"])
    assert steps_cached(second) == [False, True]  # the RUN below changed; the --link COPY did not run
    l1, l2 = ImageFS(store, "l1"), ImageFS(store, "l2")
    assert l1.image.config.diff_ids[-1] == l2.image.config.diff_ids[-1]
    assert l1.image.config.diff_ids[-2] != l2.image.config.diff_ids[-2]
    assert l2.read("/dst/f") == b"file\n" and l2.read("/dst/a.txt") == b"xa\n" and l2.read("/base") == b"two\n"
    assert second.result.image_id != first.result.image_id
    # and without --link the same change re-runs the copy
    plain = do_build(store, ctx, df.format("three").replace("--link ", ""))
    assert steps_cached(plain) == [False, False]


def test_link_copies_onto_an_empty_tree(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox
RUN mkdir -p /real /opened && ln -s /real /lnk && chmod 1777 /opened
COPY f /lnk/plain
COPY --link f /lnk/linked
COPY --link f /opened/sub/
COPY --link --chown=1000:1000 f /owned/
""", tags=["e"])
    fs = ImageFS(store, "e")
    assert fs.read("/real/plain") == b"file\n"            # without --link the image's symlink is followed
    assert fs.stat("/lnk").st_mode & 0o170000 == 0o040000  # with it, /lnk is a directory in its own layer
    assert fs.read("/lnk/linked") == b"file\n" and fs.stat("/real/linked") is None
    assert fs.mode("/opened") == 0o755                     # parents are made anew, as BuildKit documents
    assert fs.owner("/owned") == (1000, 1000) and fs.owner("/owned/f") == (1000, 1000)
    with pytest.raises(StepError, match="Dockerfile:2: unable to find user app"):
        do_build(store, ctx, "FROM busybox\nCOPY --link --chown=app f /g\n")


# -- --parents -------------------------------------------------------------------------------
def test_parents_keep_source_directories(store, ctx):
    os.chmod(ctx / "x", 0o750)
    do_build(store, ctx, """\
FROM busybox AS stage
RUN mkdir -p /opt/app/bin && echo tool > /opt/app/bin/tool
FROM busybox
COPY x/a.txt y/a.txt /no_parents/
COPY --parents x/a.txt y/a.txt /parents/
COPY --parents ./x/./y/z/*.txt /pivot/
COPY --parents x/y /dirs
COPY --parents --from=stage /opt/./app/bin/tool /from/
""", tags=["p"])
    fs = ImageFS(store, "p")
    assert fs.read("/no_parents/a.txt") == b"ya\n" and fs.stat("/no_parents/x") is None
    assert fs.read("/parents/x/a.txt") == b"xa\n" and fs.read("/parents/y/a.txt") == b"ya\n"
    assert fs.mode("/parents/x") == 0o750 and fs.owner("/parents/x") == (0, 0)
    assert fs.read("/pivot/y/z/b.txt") == b"b\n" and fs.stat("/pivot/y/z/c.md") is None
    assert fs.stat("/pivot/x") is None
    assert fs.read("/dirs/x/y/z/b.txt") == b"b\n" and fs.read("/dirs/x/y/z/c.md") == b"c\n"
    assert fs.read("/from/app/bin/tool") == b"tool\n" and fs.stat("/from/opt") is None


# -- --exclude -------------------------------------------------------------------------------
def test_exclude_patterns_and_their_cache_key(store, ctx):
    df = "FROM busybox\nCOPY --exclude=*.log --exclude=tmp dir /d/\nCOPY --exclude=*.txt hom* /m/\n"
    do_build(store, ctx, df, tags=["x"])
    fs = ImageFS(store, "x")
    assert fs.read("/d/keep.txt") == b"keep\n"
    assert fs.stat("/d/drop.log") is None and fs.stat("/d/tmp") is None
    assert fs.read("/d/sub/more.log") == b"more\n"  # `*.log` is relative to the source: top level only
    assert fs.read("/m/homework.md") == b"hw\n" and fs.stat("/m/home.txt") is None
    assert fs.stat("/m/inner.txt") is None          # homes/ is copied without its own *.txt
    (ctx / "dir/drop.log").write_text("changed but excluded\n")
    (ctx / "dir/tmp/t").write_text("changed but excluded\n")
    assert steps_cached(do_build(store, ctx, df)) == [True, True]
    (ctx / "dir/keep.txt").write_text("changed\n")
    assert steps_cached(do_build(store, ctx, df)) == [False, False]  # and every step after it
    assert steps_cached(do_build(store, ctx, df.replace("--exclude=tmp ", ""))) == [False, False]


# -- flags in the key -------------------------------------------------------------------------
@pytest.mark.parametrize("line, toggled", [
    ("COPY f /k/", "COPY --link f /k/"),
    ("COPY x/a.txt /k/", "COPY --parents x/a.txt /k/"),
    ("COPY dir /k/", "COPY --exclude=nothing-matches dir /k/"),
    ("COPY --exclude=a dir /k/", "COPY --exclude=b dir /k/"),
])
def test_each_flag_is_in_the_cache_key(store, ctx, line, toggled):
    df = "FROM busybox\n{}\n"
    do_build(store, ctx, df.format(line))
    assert steps_cached(do_build(store, ctx, df.format(line))) == [True]
    assert steps_cached(do_build(store, ctx, df.format(toggled))) == [False]


# -- ADD <url> ---------------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.txt").write_text("remote data\n")
    srv = HTTPServer(root)
    yield srv, root
    srv.close()


def test_add_url_is_cached_by_validators(store, ctx, web):
    srv, root = web
    df = f"FROM busybox\nADD {srv.url}/data.txt /r/\n"
    do_build(store, ctx, df, tags=["u"])
    fs = ImageFS(store, "u")
    assert fs.read("/r/data.txt") == b"remote data\n" and fs.mode("/r/data.txt") == 0o600
    assert len(srv.requests) == 1 and "If-None-Match" not in srv.requests[0][2]
    again = do_build(store, ctx, df)
    assert steps_cached(again) == [True]
    method, path, headers = srv.requests[-1]
    assert headers.get("If-None-Match", "").startswith('"') and "If-Modified-Since" in headers  # conditional: 304
    (root / "data.txt").write_text("new remote data\n")
    changed = do_build(store, ctx, df, tags=["u"])
    assert steps_cached(changed) == [False]
    assert ImageFS(store, "u").read("/r/data.txt") == b"new remote data\n"


def test_add_https_url(store, ctx, tmp_path, monkeypatch):
    root = tmp_path / "tls"
    root.mkdir()
    (root / "secure.txt").write_text("over tls\n")
    cert, key = self_signed(tmp_path)
    srv = HTTPServer(root, tls=(cert, key))
    try:
        df = f"FROM busybox\nADD {srv.url}/secure.txt /s\n"
        with pytest.raises(StepError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted yet
            do_build(store, ctx, df)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        do_build(store, ctx, df, tags=["https"])
        assert ImageFS(store, "https").read("/s") == b"over tls\n"
        assert steps_cached(do_build(store, ctx, df)) == [True]
        assert srv.requests[-1][2].get("If-None-Match")
    finally:
        srv.close()


def test_add_url_with_last_modified_only(store, ctx, tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a.bin").write_bytes(b"\x00\x01")
    os.utime(root / "a.bin", (1_600_000_000, 1_600_000_000))
    srv = HTTPServer(root, etags=False)
    try:
        df = f"FROM busybox\nADD {srv.url}/a.bin /a.bin\n"
        do_build(store, ctx, df, tags=["lm"])
        assert ImageFS(store, "lm").stat("/a.bin").st_mtime == 1_600_000_000  # Last-Modified becomes the mtime
        assert steps_cached(do_build(store, ctx, df)) == [True]
        assert "If-Modified-Since" in srv.requests[-1][2] and "If-None-Match" not in srv.requests[-1][2]
    finally:
        srv.close()


def test_add_checksum(store, ctx, web):
    srv, root = web
    good = "sha256:" + hashlib.sha256(b"remote data\n").hexdigest()
    df = f"FROM busybox\nADD --checksum={good} {srv.url}/data.txt /c\n"
    do_build(store, ctx, df, tags=["ck"])
    assert ImageFS(store, "ck").read("/c") == b"remote data\n"
    n = len(srv.requests)
    assert steps_cached(do_build(store, ctx, df)) == [True]
    assert len(srv.requests) == n  # content of that digest is stored: no request at all
    assert steps_cached(do_build(store, ctx, df.replace(f"--checksum={good} ", ""))) == [False]  # toggled: a miss
    bad = "sha256:" + "0" * 64
    with pytest.raises(StepError, match=r"Dockerfile:2: ADD http://.*/data.txt: content digest sha256:\w+ does not "
                                        r"match --checksum sha256:0{64}"):
        do_build(store, ctx, f"FROM busybox\nADD --checksum={bad} {srv.url}/data.txt /c\n", tags=["never"])
    with pytest.raises(ImageNotFound):
        store.resolve("never")
    with pytest.raises(StepError, match="HTTP 404"):
        do_build(store, ctx, f"FROM busybox\nADD {srv.url}/missing /c\n")


# -- ADD <git> -------------------------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path):
    r = GitRepo(tmp_path / "git")
    first = r.commit({"README": "v1\n", "sub/tool.sh": "#!/bin/sh\necho hi\n", "sub/data": "d\n"},
                     executable=("sub/tool.sh",))
    from tests.builder.servers import git

    git("tag", "v1", cwd=r.work)
    r.publish()
    srv = HTTPServer(r.bare.parent, etags=False)
    yield r, srv, first
    srv.close()


def test_add_git_repository_over_http(store, ctx, repo):
    r, srv, first = repo
    url = f"{srv.url}/repo.git"
    df = f"FROM busybox\nADD {url}#v1:sub /tools/\nADD {url} /whole\nADD --keep-git-dir=true {url}#main /kept\n"
    do_build(store, ctx, df, tags=["g"])
    fs = ImageFS(store, "g")
    assert fs.read("/tools/tool.sh") == b"#!/bin/sh\necho hi\n" and fs.mode("/tools/tool.sh") == 0o755
    assert fs.mode("/tools/data") == 0o644 and fs.stat("/tools/README") is None
    assert fs.read("/whole/README") == b"v1\n" and fs.stat("/whole/.git") is None
    assert fs.stat("/kept/.git/HEAD") is not None
    assert fs.stat("/whole/README").st_mtime == 1704164645  # the commit's time
    assert fs.owner("/whole/sub/data") == (0, 0)
    assert steps_cached(do_build(store, ctx, df)) == [True, True, True]
    r.commit({"README": "v2\n"})
    r.publish()
    after = do_build(store, ctx, df, tags=["g"])
    assert steps_cached(after) == [True, False, False]  # v1 still names the first commit
    assert ImageFS(store, "g").read("/whole/README") == b"v2\n"
    with pytest.raises(StepError, match="Dockerfile:2: ADD .*: commit \\w+ does not match --checksum 0000"):
        do_build(store, ctx, f"FROM busybox\nADD --checksum=0000 {url}#v1 /x\n")
    assert steps_cached(do_build(store, ctx, f"FROM busybox\nADD --checksum={first[:10]} {url}#v1:sub /tools/\n")) \
        == [False]  # the checksum is in the key
    toggled = df.replace("--keep-git-dir=true", "--keep-git-dir=false")
    assert steps_cached(do_build(store, ctx, toggled)) == [True, True, False]  # --keep-git-dir is in the key
    with pytest.raises(StepError, match="no branch, tag or commit 'nope'"):
        do_build(store, ctx, f"FROM busybox\nADD {url}#nope /x\n")


def test_add_git_repository_from_git_daemon(store, ctx, repo):
    r, _, first = repo
    daemon = GitDaemon(r.bare.parent)
    try:
        do_build(store, ctx, f"FROM busybox\nADD {daemon.url}/repo.git#{first} /src\n", tags=["gd"])
    finally:
        daemon.close()
    assert ImageFS(store, "gd").read("/src/sub/data") == b"d\n"


def test_parents_mode_is_in_the_key(store, ctx):
    df = "FROM busybox\nCOPY --parents x/a.txt /k/\n"
    do_build(store, ctx, df)
    os.chmod(ctx / "x", 0o700)
    b = do_build(store, ctx, df, tags=["pm"])
    assert steps_cached(b) == [False]
    assert ImageFS(store, "pm").mode("/k/x") == 0o700


@pytest.mark.parametrize("src, git_ref", [
    ("https://example.invalid/org/repo.git#v1.2:docs", ("https://example.invalid/org/repo.git", "v1.2", "docs")),
    ("git@example.invalid:org/repo.git#main", ("git@example.invalid:org/repo.git", "main", "")),
    ("ssh://git@example.invalid/org/repo.git", ("ssh://git@example.invalid/org/repo.git", "", "")),
    ("git://example.invalid/repo.git#:sub/dir/", ("git://example.invalid/repo.git", "", "sub/dir")),
    ("https://example.invalid/archive.tar.gz", None),
    ("https://example.invalid/repo.git/file.txt", None),
])
def test_which_sources_are_git(src, git_ref):
    from builder.remote import is_git, parse_git

    assert is_git(src) is (git_ref is not None)
    if git_ref is not None:
        g = parse_git(src)
        assert (g.remote, g.ref, g.subdir) == git_ref
