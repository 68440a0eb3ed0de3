"""Hostile layers: nothing is ever written, linked or deleted outside the target."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from storage.errors import LayerError, UnsafePathError
from storage.layers import apply_layer
from tests.storage.test_layers_support import snapshot
from tests.tarballs import make_tar


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the target that must stay exactly as it is."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_text("do not touch")
    return d


def apply(tmp_path: Path, entries: list[tuple], **kw) -> Path:
    target = tmp_path / "deep" / "target"
    apply_layer(io.BytesIO(make_tar(entries)), target, **kw)
    return target


def unchanged(tmp_path: Path, outside: Path) -> None:
    assert snapshot(outside) == {"secret": snapshot(outside)["secret"]}
    assert (outside / "secret").read_text() == "do not touch"
    assert set(os.listdir(tmp_path)) <= {"outside", "deep"}
    deep = tmp_path / "deep"
    if deep.exists():
        assert [n for n in os.listdir(deep) if n.startswith(".")] == []  # no temp leftovers


@pytest.mark.parametrize("name", ["../x", "a/../../x", "./../outside/new", "a/b/../../../x"])
def test_dotdot_entries_are_refused(tmp_path, outside, name):
    with pytest.raises(UnsafePathError, match="points outside"):
        apply(tmp_path, [("dir", "a"), ("file", name, b"evil")])
    assert not (tmp_path / "deep" / "target").exists()
    unchanged(tmp_path, outside)


def test_absolute_entry_names_are_relative_to_the_target(tmp_path, outside):
    target = apply(tmp_path, [("file", f"{outside}/secret", b"evil"), ("file", "/abs", b"a")])
    assert (target / "abs").read_bytes() == b"a"
    assert (target / str(outside).lstrip("/") / "secret").read_bytes() == b"evil"
    unchanged(tmp_path, outside)


@pytest.mark.parametrize("link", ["../../..", "../../../outside", "a/../../.."])
def test_relative_symlink_escape_then_write_through(tmp_path, outside, link):
    with pytest.raises(UnsafePathError, match="evil/secret"):
        apply(tmp_path, [("dir", "a"), ("symlink", "evil", link), ("file", "evil/secret", b"pwned")])
    unchanged(tmp_path, outside)


@pytest.mark.parametrize("link", ["/", "{outside}"])
def test_absolute_symlinks_resolve_inside_the_target(tmp_path, outside, link):
    link = link.format(outside=outside)
    # Entries always aim at `outside`, so a broken applier would hit it (and
    # nothing else on the host) - which `unchanged` reports.
    through = f"evil{outside}/secret" if link == "/" else "evil/secret"
    target = apply(tmp_path, [("symlink", "evil", link), ("file", through, b"pwned")])
    inside = target / str(outside).lstrip("/") / "secret"
    assert inside.read_bytes() == b"pwned"  # as in the container: / is the target
    assert os.readlink(target / "evil") == link  # the link itself is kept as written
    unchanged(tmp_path, outside)


def test_absolute_symlink_climbing_above_root_is_refused(tmp_path, outside):
    with pytest.raises(UnsafePathError, match="evil/secret"):
        apply(tmp_path, [("symlink", "evil", f"/../../..{outside}"), ("file", "evil/secret", b"x")])
    unchanged(tmp_path, outside)


def test_symlinked_parent_from_a_lower_layer(tmp_path, outside):
    """In plain mode the lower content is already there, hostile links included."""
    target = apply(tmp_path, [("symlink", "lib", str(outside)), ("symlink", "up", "../../outside")])
    apply_layer(io.BytesIO(make_tar([("file", "lib/secret", b"x")])), target)
    assert (target / str(outside).lstrip("/") / "secret").read_bytes() == b"x"
    with pytest.raises(UnsafePathError):
        apply_layer(io.BytesIO(make_tar([("file", "up/secret", b"x")])), target)
    unchanged(tmp_path, outside)


def test_symlink_chains_and_loops(tmp_path, outside):
    target = apply(tmp_path, [("dir", "real"), ("symlink", "l1", "l2"), ("symlink", "l2", "/real"),
                              ("file", "l1/f", b"chained")])
    assert (target / "real" / "f").read_bytes() == b"chained"
    loop = tmp_path / "deep" / "t2"
    with pytest.raises(LayerError, match="too many levels of symlinks"):
        apply_layer(io.BytesIO(make_tar([("symlink", "loop", "loop"), ("file", "loop/f", b"x")])),
                    loop)
    assert not loop.exists()
    unchanged(tmp_path, outside)


@pytest.mark.parametrize("link", ["../outside/secret", "../../../outside/secret"])
def test_hardlink_outside_is_refused(tmp_path, outside, link):
    with pytest.raises(UnsafePathError):
        apply(tmp_path, [("hardlink", "stolen", link)])
    unchanged(tmp_path, outside)


def test_absolute_hardlink_stays_inside(tmp_path, outside):
    # /…/outside/secret means <target>/…/outside/secret, which does not exist
    with pytest.raises(LayerError, match="does not exist"):
        apply(tmp_path, [("hardlink", "stolen", f"{outside}/secret")])
    assert os.stat(outside / "secret").st_nlink == 1
    unchanged(tmp_path, outside)


def test_hardlink_through_symlink_stays_inside(tmp_path, outside):
    with pytest.raises(LayerError, match="does not exist"):
        apply(tmp_path, [("symlink", "o", str(outside)), ("hardlink", "stolen", "o/secret")])
    assert os.stat(outside / "secret").st_nlink == 1
    unchanged(tmp_path, outside)


def test_whiteouts_cannot_delete_outside(tmp_path, outside):
    target = apply(tmp_path, [("symlink", "o", str(outside)), ("symlink", "up", "..")])
    apply_layer(io.BytesIO(make_tar([("file", "o/.wh.secret")])), target)
    for bad in ("up/.wh.secret", ".wh...", "a/.wh.."):
        with pytest.raises(UnsafePathError):
            apply_layer(io.BytesIO(make_tar([("dir", "a"), ("file", bad)])), target)
    apply_layer(io.BytesIO(make_tar([("file", "o/.wh..wh..opq")])), target)
    unchanged(tmp_path, outside)


def test_final_symlink_is_replaced_not_followed(tmp_path, outside):
    target = apply(tmp_path, [("symlink", "f", f"{outside}/secret")])
    os.symlink(outside / "secret", target / "g")  # a host link planted in the target
    os.symlink(outside, target / "d")
    apply_layer(io.BytesIO(make_tar([("file", "f", b"new"), ("file", "g", b"new"),
                                     ("dir", "d")])), target)
    for name in ("f", "g"):
        assert (target / name).read_bytes() == b"new" and not (target / name).is_symlink()
    assert (target / "d").is_dir() and not (target / "d").is_symlink()
    unchanged(tmp_path, outside)


def test_overlay_xattrs_from_a_layer_are_refused(tmp_path, outside):
    entries = [("xattr-file", "f", {"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                    "SCHILY.xattr.user.fine": "ok"})]
    buf = io.BytesIO(make_tar(entries))
    target = tmp_path / "deep" / "target"
    result = apply_layer(buf, target)
    assert any("trusted.overlay.redirect refused" in s for s in result.skipped)
    assert "trusted.overlay.redirect" not in os.listxattr(target / "f")
    assert os.getxattr(target / "f", "user.fine") == b"ok"
    unchanged(tmp_path, outside)


def test_root_entry_cannot_be_replaced(tmp_path, outside):
    with pytest.raises(UnsafePathError):
        apply(tmp_path, [("symlink", "./", "/")])
    unchanged(tmp_path, outside)


def test_damaged_tars_fail_with_one_line_errors(tmp_path, outside):
    """Random damage to a valid layer: applying either works or raises a
    StorageError (never a raw traceback type), and stays in the target."""
    import random

    from storage.errors import StorageError

    good = make_tar([("dir", "a"), ("file", "a/f", b"x" * 3000), ("symlink", "s", "a/f"),
                     ("hardlink", "h", "a/f"), ("file", "p" * 150, b"long"),
                     ("xattr-file", "x", {"SCHILY.xattr.user.k": "v"})])
    r = random.Random(5)
    for i in range(300):
        bad = bytearray(good)
        for _ in range(r.randint(1, 8)):
            bad[r.randrange(len(bad))] = r.randrange(256)
        if r.random() < 0.3:
            bad = bad[: r.randrange(len(bad))]
        try:
            apply_layer(io.BytesIO(bytes(bad)), tmp_path / "deep" / f"t{i}")
        except StorageError as e:
            assert "\n" not in str(e)
    unchanged(tmp_path, outside)
