"""Hostile layers: nothing is ever written, linked or deleted outside the target."""
from __future__ import annotations

import hashlib
import io
import os
import stat
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
    os.chmod(d / "secret", 0o640)
    os.chmod(d, 0o750)
    for p in (d / "secret", d):
        os.utime(p, (1_000_000, 1_000_000))
    return d


def apply(tmp_path: Path, entries: list[tuple], **kw) -> Path:
    target = tmp_path / "deep" / "target"
    apply_layer(io.BytesIO(make_tar(entries)), target, **kw)
    return target


def unchanged(tmp_path: Path, outside: Path) -> None:
    """`outside` is exactly as the fixture made it: content, mode, owner,
    xattrs, times, and no entry added or removed (its own mtime)."""
    secret = ("file", hashlib.sha256(b"do not touch").hexdigest(), 0o640, os.getuid(), os.getgid(), (), 1_000_000)
    assert snapshot(outside) == {"secret": secret}
    st = os.stat(outside)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o750, 1_000_000)
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


def _damaged(good: bytes, seed: int = 5) -> list[tuple[str, bytes]]:
    """Damage a valid tar cannot survive: one byte changed in any header
    block outside its checksum field (the checksum no longer adds up), and
    cuts strictly inside an entry's headers or data (never at an entry
    boundary, where a shorter archive is still a valid one)."""
    import random
    import tarfile

    r = random.Random(seed)
    with tarfile.open(fileobj=io.BytesIO(good)) as tf:
        entries = [(m.offset, m.offset_data, m.size) for m in tf.getmembers()]
    out = []
    for start, data, size in entries:
        for block in sorted({start, data - 512}):  # the PAX header's header, the entry's own
            fields = [0, 99, 100, 108, 124, 136, 147, 156, 157, 257, 345, 500, 511]  # name ... padding
            for pos in fields + r.sample([i for i in range(512) if not 148 <= i < 156], 16):
                bad = bytearray(good)
                bad[block + pos] = (bad[block + pos] + r.randrange(1, 256)) % 256
                out.append((f"byte {block + pos} ({block}+{pos})", bytes(bad)))
        end = data + size
        for cut in sorted({start + 1, start + 511, data - 1, end - 1, *r.sample(range(start + 1, end), 6)}):
            out.append((f"cut at {cut}", good[:cut]))
    return out


def test_damaged_tars_fail_with_one_line_errors(tmp_path, outside):
    """Every damaged variant of a valid layer is refused with a one-line
    StorageError, leaves no target behind and stays inside the target."""
    from storage.errors import StorageError

    good = make_tar([("dir", "a"), ("file", "a/f", b"x" * 3000), ("symlink", "s", "a/f"),
                     ("hardlink", "h", "a/f"), ("file", "p" * 150, b"long"),
                     ("xattr-file", "x", {"SCHILY.xattr.user.k": "v"})])
    apply_layer(io.BytesIO(good), tmp_path / "deep" / "good")  # undamaged, it applies
    assert (tmp_path / "deep" / "good" / ("p" * 150)).read_bytes() == b"long"
    variants = _damaged(good)
    assert len(variants) > 200
    for i, (what, bad) in enumerate(variants):
        target = tmp_path / "deep" / f"t{i}"
        with pytest.raises(StorageError) as e:  # each one, not just those that happen to fail
            apply_layer(io.BytesIO(bad), target)
        assert "\n" not in str(e.value), what
        assert not target.exists(), what
    unchanged(tmp_path, outside)