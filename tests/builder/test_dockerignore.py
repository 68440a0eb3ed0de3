""".dockerignore with Docker's documented semantics, and the context walk built on it."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder.context import Context, HashCache, clean_source, tree_records
from builder.dockerignore import Matcher, load, read_patterns


def m(text: str) -> Matcher:
    return Matcher(read_patterns(text))


def test_reading_patterns():
    assert read_patterns("\ufeff# comment\n  \n /abs/dir/ \n!./keep//this\n#x\n a/../b\n") == \
        ["abs/dir", "!keep/this", "b"]


@pytest.mark.parametrize("path, excluded", [
    ("somedir/temporary.txt", True), ("somedir/temp", True), ("temp", False),
    ("somedir/subdir/temporary.txt", True), ("a/b/c/temp", False),
    ("tempa", True), ("tempab", False), ("a/b/c/tempa", False),
])
def test_docs_example(path, excluded):
    # the example from Docker's build context docs
    rules = m("# comment\n*/temp*\n*/*/temp*\ntemp?\n")
    assert rules.excluded(path) is excluded


@pytest.mark.parametrize("rules, path, excluded", [
    ("**/*.go", "main.go", True), ("**/*.go", "a/b/c.go", True), ("**/*.go", "a/go", False),
    ("*.md\n!README.md", "README.md", False), ("*.md\n!README.md", "CHANGES.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-x.md", False),
    ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
    ("/foo", "foo", True), ("/foo", "foo/bar", True), ("foo", "x/foo", False),
    ("dir", "dir/a/b", True), ("dir/", "dir/a", True),
    ("a/**", "a/b", True), ("a/**", "a", False), ("a/**/z", "a/z", True), ("a/**/z", "a/b/c/z", True),
    ("**", "anything/at/all", True), ("**/x", "x", True), ("**.txt", "a/b.txt", True),
    ("[a-c].txt", "b.txt", True), ("[^a-c].txt", "b.txt", False), ("[^a-c].txt", "d.txt", True),
    ("\\*.txt", "*.txt", True), ("\\*.txt", "a.txt", False),
    ("?", "a", True), ("?", "ab", False), ("*", "a/b", True),
    ("a/*/c", "a/b/c/d", True), ("a/*/c", "a/b/x/c", False),
])
def test_semantics(rules, path, excluded):
    assert m(rules).excluded(path) is excluded


def make_tree(root: Path, files: list[str]) -> None:
    for f in files:
        p = root / f
        if f.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f)


def test_walk_with_exceptions_inside_excluded_directory(tmp_path: Path):
    make_tree(tmp_path, ["dir/keep", "dir/drop", "dir/sub/x", "other/a", "empty/", "top.md", "README.md"])
    ctx = Context(tmp_path, m("dir\n!dir/keep\n*.md\n!README.md\nempty\n"))
    assert [e.rel for e in ctx.walk("")] == ["README.md", "dir", "dir/keep", "other", "other/a"]
    assert ctx.lookup("dir/drop") is None and ctx.lookup("dir/keep") is not None
    assert ctx.lookup("dir") is not None  # visible because something inside is


def test_excluded_directory_without_exceptions_is_not_entered(tmp_path: Path):
    make_tree(tmp_path, ["node_modules/a/b", "src/x"])
    os.chmod(tmp_path / "node_modules", 0)  # walking it would fail
    try:
        ctx = Context(tmp_path, m("node_modules\n!**/keep\n"))
        assert [e.rel for e in ctx.walk("")] == ["src", "src/x"]
    finally:
        os.chmod(tmp_path / "node_modules", 0o755)


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path):
    make_tree(tmp_path, ["a", "b", "build/app.Dockerfile"])
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "build/app.Dockerfile.dockerignore").write_text("b\n")
    assert load(tmp_path, tmp_path / "build/app.Dockerfile").excluded("b")
    assert not load(tmp_path, tmp_path / "build/app.Dockerfile").excluded("a")
    assert load(tmp_path, tmp_path / "Dockerfile").excluded("a")


def test_glob_and_clean_sources(tmp_path: Path):
    make_tree(tmp_path, ["a.txt", "b.txt", "c.md", "sub/d.txt", "arr[0].txt"])
    ctx = Context(tmp_path, m("b.txt\n"))
    assert [e.rel for e in ctx.glob("*.txt")] == ["a.txt", "arr[0].txt"]
    assert [e.rel for e in ctx.glob("arr[[]0].txt")] == ["arr[0].txt"]
    assert [e.rel for e in ctx.glob("*/*.txt")] == ["sub/d.txt"]
    assert clean_source("/../x/./y/") == "x/y" and clean_source("../../a") == "a"


def test_symlink_source_is_followed_but_stays_inside(tmp_path: Path):
    make_tree(tmp_path, ["real/f"])
    os.symlink("real", tmp_path / "link")
    os.symlink("/etc", tmp_path / "escape")
    ctx = Context(tmp_path)
    assert ctx.lookup("link").rel == "real"
    assert ctx.lookup("escape") is None or ctx.lookup("escape").path.resolve().is_relative_to(tmp_path)


def test_hash_cache_reads_unchanged_files_once(tmp_path: Path, store_root: Path):
    from storage.images import ImageStore

    store = ImageStore(store_root)
    tmp_path = tmp_path / "ctx"
    make_tree(tmp_path, [f"f{i}" for i in range(20)])
    for i in range(20):  # older than the racy window (test_hash_cache_rereads_racy_files)
        os.utime(tmp_path / f"f{i}", ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    first = HashCache(store.db)
    ctx = Context(tmp_path, None, first)
    recs = list(tree_records(ctx, ctx.lookup(""), ""))
    first.flush()
    assert first.reads == 20
    second = HashCache(store.db)
    ctx2 = Context(tmp_path, None, second)
    (tmp_path / "f3").write_text("changed!")
    recs2 = list(tree_records(ctx2, ctx2.lookup(""), ""))
    assert second.reads == 1
    assert [r for r in recs if "f3" not in r] == [r for r in recs2 if "f3" not in r]
    assert recs != recs2


def test_hash_cache_rereads_racy_files(tmp_path: Path, store_root: Path):
    """A file changed in the same timestamp tick as it was hashed keeps size and mtime: only
    the racy rule (mtime not older than the hashing) makes the next build read it again."""
    from storage.images import ImageStore

    store = ImageStore(store_root)
    f = tmp_path / "f"
    f.write_text("aaaa")
    st = os.stat(f)
    first = HashCache(store.db)
    old = first.digest(f, st, tmp_path)
    first.flush()
    f.write_text("bbbb")  # same size; the same mtime as when it was hashed
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = os.stat(f)
    assert (again.st_size, again.st_mtime_ns, again.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    second = HashCache(store.db)
    assert second.digest(f, again, tmp_path) != old and second.reads == 1
    second.flush()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # now clearly older than its last reading
    third = HashCache(store.db)
    digest = third.digest(f, os.stat(f), tmp_path)
    third.flush()
    fourth = HashCache(store.db)
    assert fourth.digest(f, os.stat(f), tmp_path) == digest and fourth.reads == 0
    os.chmod(f, 0o600)  # a mode change alone is a miss too
    assert HashCache(store.db).known(f, os.stat(f), tmp_path) is None


def test_records_ignore_mtime_but_not_mode(tmp_path: Path):
    make_tree(tmp_path, ["f"])
    ctx = Context(tmp_path)
    before = list(tree_records(ctx, ctx.lookup("f"), "f"))
    os.utime(tmp_path / "f", (1, 1))
    ctx = Context(tmp_path)
    assert list(tree_records(ctx, ctx.lookup("f"), "f")) == before
    os.chmod(tmp_path / "f", 0o700)
    ctx = Context(tmp_path)
    assert list(tree_records(ctx, ctx.lookup("f"), "f")) != before
