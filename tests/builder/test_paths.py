"""Image paths a build step resolves (COPY/ADD destinations, WORKDIR, sources
from stages and the context): symlinks in a hostile image lead only inside it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import BuildError

from tests.builder.helpers import ImageFS, do_build, write_context


@pytest.fixture
def ctx(tmp_path):
    root = write_context(tmp_path / "ctx", {"a.txt": "A", "dir/one": "1"})
    os.symlink("one", root / "dir/link")
    return root


def _hostile_base(store, tmp_path: Path, links: dict[str, str], tag: str = "hostile") -> str:
    """An image (busybox plus `links`: name -> target) made by a build, as an attacker's base would be."""
    base = write_context(tmp_path / f"base-{tag}", {})
    for name, target in links.items():
        os.symlink(target, base / name)
    do_build(store, base, "FROM busybox\nCOPY . /\n", tags=[tag])
    return tag


def _escape(tmp_path: Path) -> str:
    """A dangling symlink target that climbs far above any directory soko stages in,
    then names a host directory (a broken walk writes there)."""
    return "/nonexistent" + "/.." * 64 + str(tmp_path / "host")


def test_copy_destination_through_a_dangling_climbing_symlink_stays_in_the_image(store, ctx, tmp_path):
    (tmp_path / "host").mkdir()
    base = _hostile_base(store, tmp_path, {"app": _escape(tmp_path)})
    do_build(store, ctx, f"FROM {base}\nCOPY a.txt /app/\n", tags=["out"])
    assert os.listdir(tmp_path / "host") == []  # nothing written on the host
    inside = str(tmp_path / "host").lstrip("/") + "/a.txt"  # `..` stops at the image's root
    assert ImageFS(store, "out").read("/" + inside) == b"A"


def test_workdir_through_a_dangling_climbing_symlink_stays_in_the_image(store, ctx, tmp_path):
    (tmp_path / "host").mkdir()
    base = _hostile_base(store, tmp_path, {"app": _escape(tmp_path)})
    do_build(store, ctx, f"FROM {base}\nWORKDIR /app/made\n", tags=["out"])
    assert os.listdir(tmp_path / "host") == []
    fs = ImageFS(store, "out")
    assert fs.stat(str(tmp_path / "host/made"), follow=True) is not None


def test_copy_from_a_stage_root(store, ctx):
    do_build(store, ctx, "FROM scratch AS files\nCOPY dir /d\nCOPY a.txt /\n"
                         "FROM busybox\nCOPY --from=files / /all/\n", tags=["out"])
    fs = ImageFS(store, "out")
    assert fs.read("/all/a.txt") == b"A" and fs.read("/all/d/one") == b"1"


def test_copy_from_a_wildcard_at_the_stage_root(store, ctx):
    do_build(store, ctx, "FROM scratch AS files\nCOPY a.txt /a.txt\nCOPY a.txt /b.txt\nCOPY dir /d\n"
                         "FROM busybox\nCOPY --from=files /*.txt /txt/\n", tags=["out"])
    fs = ImageFS(store, "out")
    assert fs.read("/txt/a.txt") == b"A" and fs.read("/txt/b.txt") == b"A" and fs.stat("/txt/d") is None


def test_a_symlink_source_keeps_its_own_name(store, ctx):
    # BuildKit copies the link's target under the name given (filepath.Base of the source)
    do_build(store, ctx, "FROM busybox\nCOPY dir/link /x/\nCOPY dir/l* /g/\n", tags=["out"])
    fs = ImageFS(store, "out")
    assert fs.read("/x/link") == b"1" and fs.stat("/x/one") is None
    assert fs.read("/g/link") == b"1" and fs.stat("/g/one") is None


def test_a_source_name_too_long_for_linux_is_just_not_found(store, ctx):
    with pytest.raises(BuildError, match=r"^Dockerfile:2: COPY failed: file not found in build context"):
        do_build(store, ctx, f"FROM busybox\nCOPY {'n' * 256} /x\n")


def test_a_symlink_loop_in_the_context_is_a_clear_error(store, ctx):
    os.symlink("loop2", ctx / "loop1")
    os.symlink("loop1", ctx / "loop2")
    with pytest.raises(BuildError, match="too many levels of symbolic links: loop1"):
        do_build(store, ctx, "FROM busybox\nCOPY loop1 /x\n")
