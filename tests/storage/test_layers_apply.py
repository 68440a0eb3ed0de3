"""Applying layers: whiteouts per image-spec (plain and overlay mode), hard
links, attributes, digests, atomicity, layers written by GNU tar."""
from __future__ import annotations

import io
import os
import stat
import sys
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_root
from storage.blobs import BlobStore
from storage.errors import DigestMismatch, LayerError
from storage.layers import apply_blob, apply_layer, write_layer
from tests.storage.test_layers_support import overlay_readonly, snapshot
from tests.tarballs import make_tar


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def tar_layer(tmp_path: Path, store: BlobStore, entries: list[tuple]) -> str:
    return store.put_bytes(make_tar(entries, gzip=True))


# The example of image-spec layer.md, "Whiteouts" and "Opaque Whiteout".
BASE = [("dir", "a"), ("dir", "a/b"), ("dir", "a/b/c"), ("file", "a/b/c/bar", b"bar"),
        ("dir", "etc"), ("file", "etc/my-app-config", b"cfg"),
        ("dir", "bin"), ("file", "bin/my-app-binary", b"bin"), ("file", "bin/my-app-tools", b"t"),
        ("dir", "bin/tools"), ("file", "bin/tools/my-app-tool-one", b"one"),
        ("dir", "keep"), ("file", "keep/x", b"x")]
UPPER = [("dir", "a"), ("file", "a/.wh..wh..opq"), ("dir", "a/b"), ("dir", "a/b/c"),
         ("file", "a/b/c/foo", b"foo"),
         ("dir", "bin"), ("file", "bin/.wh..wh..opq"),
         ("dir", "etc"), ("file", "etc/.wh.my-app-config"),
         ("dir", "etc/my-app.d"), ("file", "etc/my-app.d/default.cfg", b"new"),
         ("file", "keep/.wh.missing-is-fine")]
# The same layer with the opaque marker after the entries it must not hide.
UPPER_OPQ_LAST = [("dir", "a"), ("dir", "a/b"), ("dir", "a/b/c"), ("file", "a/b/c/foo", b"foo"),
                  ("file", "a/.wh..wh..opq")] + UPPER[5:]
EXPECTED = {"a", "a/b", "a/b/c", "a/b/c/foo", "bin", "etc", "etc/my-app.d",
            "etc/my-app.d/default.cfg", "keep", "keep/x"}


def names(root: Path) -> set[str]:
    return set(snapshot(root))


@pytest.mark.parametrize("upper", [UPPER, UPPER_OPQ_LAST], ids=["opaque-first", "opaque-last"])
def test_whiteouts_and_opaque_dirs_plain_mode(tmp_path, store, upper):
    base, top = tar_layer(tmp_path, store, BASE), tar_layer(tmp_path, store, upper)
    out = tmp_path / "rootfs"
    apply_blob(store, base, out)
    apply_blob(store, top, out)
    assert names(out) == EXPECTED
    assert (out / "a/b/c/foo").read_bytes() == b"foo"


def test_whiteout_only_hides_lower_content(tmp_path, store):
    base = tar_layer(tmp_path, store, [("dir", "d"), ("file", "d/old", b"o"), ("file", "f", b"1")])
    # The same layer adds d/new and f and also whites them out (after): they stay.
    top = tar_layer(tmp_path, store, [("dir", "d"), ("file", "d/new", b"n"), ("file", "f", b"2"),
                                      ("file", ".wh.d"), ("file", ".wh.f")])
    out = tmp_path / "rootfs"
    apply_blob(store, base, out)
    apply_blob(store, top, out)
    assert names(out) == {"d", "d/new", "f"}  # d/old was lower content under a whited-out d
    assert (out / "f").read_bytes() == b"2"


def test_overlay_mode_produces_overlayfs_lower_dirs(tmp_path, store):
    need_root()
    base, top = tar_layer(tmp_path, store, BASE), tar_layer(tmp_path, store, UPPER)
    l0, l1 = tmp_path / "l0", tmp_path / "l1"
    apply_blob(store, base, l0, mode="overlay")
    apply_blob(store, top, l1, mode="overlay")
    wh = os.lstat(l1 / "etc" / "my-app-config")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(l1 / "a", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(l1 / "bin", "trusted.overlay.opaque") == b"y"
    assert not (l1 / "etc" / ".wh.my-app-config").exists()
    plain = tmp_path / "plain"
    apply_blob(store, base, plain)
    apply_blob(store, top, plain)
    merged = tmp_path / "merged"
    merged.mkdir()
    with overlay_readonly([l1, l0], merged):
        assert snapshot(merged) == snapshot(plain)


def test_overlay_mode_whiteout_then_directory_is_opaque(tmp_path, store):
    need_root()
    layer = tar_layer(tmp_path, store, [("file", ".wh.d"), ("dir", "d"), ("file", "d/new", b"n")])
    out = tmp_path / "l1"
    apply_blob(store, layer, out, mode="overlay")
    assert os.getxattr(out / "d", "trusted.overlay.opaque") == b"y"
    assert names(out) == {"d", "d/new"}


def test_round_trip_preserves_everything(tmp_path, store):
    need_root()
    src = tmp_path / "src"
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "usr" / "bin" / "prog").write_bytes(os.urandom(3 << 20))
    os.chmod(src / "usr" / "bin" / "prog", 0o4750)
    os.chown(src / "usr" / "bin" / "prog", 0, 42)
    os.link(src / "usr" / "bin" / "prog", src / "usr" / "bin" / "prog2")
    os.symlink("prog", src / "usr" / "bin" / "sym")
    os.lchown(src / "usr" / "bin" / "sym", 7, 8)
    (src / "home").mkdir(mode=0o1777)
    os.chmod(src / "home", 0o1777)
    (src / "home" / "user").mkdir()
    os.chown(src / "home" / "user", 1000, 1000)
    os.chmod(src / "home" / "user", 0o500)  # read-only dir with content
    (src / "home" / "user" / "f").write_text("mine")
    os.chown(src / "home" / "user" / "f", 1000, 1000)
    os.setxattr(src / "home" / "user" / "f", "user.tag", b"\x00\xff")
    subprocess.run(["setcap", "cap_net_raw=+ep", str(src / "usr" / "bin" / "prog")], check=True)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    os.utime(src / "home" / "user", (1_500_000_000, 1_500_000_000))
    info = write_layer(src, store, compression="zstd")
    out = tmp_path / "out"
    result = apply_blob(store, info.digest, out, diff_id=info.diff_id)
    assert result.diff_id == info.diff_id and result.digest == info.digest
    assert result.compression == "zstd" and result.skipped == ()
    assert snapshot(out) == snapshot(src)
    assert os.stat(out / "home" / "user").st_mtime == 1_500_000_000  # dirs too
    p1, p2 = os.stat(out / "usr/bin/prog"), os.stat(out / "usr/bin/prog2")
    assert p1.st_ino == p2.st_ino and p1.st_nlink == 2


@pytest.mark.parametrize("umask,setgid_parent", [(0o022, False), (0o077, True), (0o002, True)])
def test_owners_and_modes_exact_whatever_the_umask_and_parent(tmp_path, store, umask, setgid_parent):
    """Files get the tar's owner and mode exactly, whether they could be created with them
    (root:root, no bits the umask takes away) or need fchown/fchmod: not the umask's mode,
    not the group a setgid parent directory hands down."""
    need_root()
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    kinds = [(0o644, 0, 0), (0o755, 0, 0), (0o600, 0, 0), (0o444, 0, 0), (0o666, 0, 0),
             (0o777, 0, 0), (0o000, 0, 0), (0o2755, 0, 0), (0o4755, 0, 0), (0o1644, 0, 0),
             (0o640, 0, 42), (0o644, 42, 0), (0o755, 1000, 1000)]
    for i, (mode, uid, gid) in enumerate(kinds):
        for where in (src, src / "d"):
            f = where / f"f{i}"
            f.write_bytes(b"x" * i)
            os.chown(f, uid, gid)
            os.chmod(f, mode)
    info = write_layer(src, store, compression="zstd")
    parent = tmp_path / "parent"
    parent.mkdir()
    if setgid_parent:  # what is made in it gets group 4321 unless chowned
        os.chown(parent, 0, 4321)
        os.chmod(parent, 0o2775)
    old = os.umask(umask)
    try:
        apply_blob(store, info.digest, parent / "out", diff_id=info.diff_id)
    finally:
        os.umask(old)
    assert snapshot(parent / "out") == snapshot(src)


def test_layers_written_by_gnu_tar_apply(tmp_path, store):
    src = tmp_path / "src"
    (src / ("long" * 40)).mkdir(parents=True)
    (src / ("long" * 40) / ("name" * 40)).write_text("deep")
    (src / "f").write_text("f")
    os.link(src / "f", src / "hard")
    os.symlink("/" + "t" * 200, src / "longsym")
    os.setxattr(src / "f", "user.x", b"1")
    for fmt in ("gnu", "posix", "ustar"):
        for comp_flag in ("-z", "--zstd", None):
            if fmt == "ustar" and comp_flag != "-z":
                continue
            blob = tmp_path / f"l.{fmt}"
            files = ["f", "hard"] if fmt == "ustar" else ["."]
            cmd = ["tar", "-C", str(src), f"--format={fmt}", "-cf", str(blob), *files]
            if fmt == "posix":
                cmd[1:1] = ["--xattrs", "--xattrs-include=*"]
            if comp_flag:
                cmd.insert(1, comp_flag)
            subprocess.run(cmd, check=True)
            out = tmp_path / f"out-{fmt}-{comp_flag}"
            with open(blob, "rb") as f:
                apply_layer(f, out)
            want = snapshot(src)
            if fmt == "ustar":
                want = {k: v for k, v in want.items() if k in files}
                want = {k: v[:-2] + ((), v[-1]) for k, v in want.items()}  # no xattrs in ustar
            if fmt == "gnu":
                want = {k: v[:-2] + ((), v[-1]) for k, v in want.items()}
            assert snapshot(out) == want, (fmt, comp_flag)
            assert os.stat(out / "f").st_ino == os.stat(out / "hard").st_ino


def test_wrong_diff_id_or_digest_applies_nothing(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("content")
    info = write_layer(src, store)
    out = tmp_path / "out"
    bad = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match="diff_id"):
        apply_blob(store, info.digest, out, diff_id=bad)
    with open(store.path(info.digest), "rb") as f:
        with pytest.raises(DigestMismatch, match="layer blob"):
            apply_layer(f, out, digest=bad, diff_id=info.diff_id)
    assert not out.exists()
    assert set(os.listdir(tmp_path)) == {"store", "src"}


def test_corrupted_blob_in_store_is_caught(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    info = write_layer(src, store, compression="none")
    path = store.path(info.digest)
    data = bytearray(path.read_bytes())
    data[2000] ^= 1  # inside the file data: the tar still parses
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        apply_blob(store, info.digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_gzip_layer(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(300_000))
    info = write_layer(src, store)
    data = store.read_bytes(info.digest)
    out = tmp_path / "out"
    with pytest.raises(LayerError, match="^truncated gzip stream$"):
        apply_layer(io.BytesIO(data[: len(data) // 2]), out)
    assert not out.exists() and set(os.listdir(tmp_path)) == {"store", "src"}


def test_truncated_and_corrupt_tar(tmp_path):
    tar = make_tar([("file", "a", os.urandom(5000)), ("file", "b", b"b")])
    with pytest.raises(LayerError, match="truncated tar stream"):
        apply_layer(io.BytesIO(tar[:3000]), tmp_path / "o1")
    bad = bytearray(tar)
    bad[100] ^= 0xFF  # a header's mode field
    with pytest.raises(LayerError, match="corrupt tar header"):
        apply_layer(io.BytesIO(bytes(bad)), tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_in_place_and_atomic_options(tmp_path, store):
    layer = tar_layer(tmp_path, store, [("file", "new", b"n")])
    out = tmp_path / "existing"
    out.mkdir()
    (out / "old").write_text("o")
    apply_blob(store, layer, out)  # existing target: applied in place
    assert names(out) == {"old", "new"}
    with pytest.raises(LayerError, match="already exists"):
        apply_blob(store, layer, out, atomic=True)


def test_replacing_entries_of_other_types(tmp_path, store):
    base = tar_layer(tmp_path, store, [("dir", "x"), ("file", "x/inner", b"i"),
                                       ("file", "y", b"y"), ("symlink", "z", "y")])
    top = tar_layer(tmp_path, store, [("file", "x", b"now a file"), ("dir", "y"),
                                      ("file", "z", b"z")])
    out = tmp_path / "out"
    apply_blob(store, base, out)
    apply_blob(store, top, out)
    assert (out / "x").read_bytes() == b"now a file"
    assert (out / "y").is_dir() and not (out / "z").is_symlink()
    assert (out / "z").read_bytes() == b"z"


def test_without_privileges_devices_and_owners_are_skipped(tmp_path, store):
    """In a user namespace (rootless), mknod and unmapped owners fail: the
    rest of the layer still applies and `skipped` says what was left out."""
    need_root()  # to make the device node and owners in the source tree
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    (src / "f").write_text("data")
    os.chown(src / "f", 1234, 1234)
    info = write_layer(src, store)
    out = tmp_path / "out"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from storage.blobs import BlobStore\n"
        "from storage.layers import apply_blob\n"
        "r = apply_blob(BlobStore(sys.argv[2]), sys.argv[3], sys.argv[4])\n"
        "print('\\n'.join(r.skipped))\n")
    p = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", script,
                        str(Path(__file__).resolve().parents[2]), str(store.root), info.digest,
                        str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "null: creating device nodes is not permitted" in p.stdout
    assert "owner 1234:1234 cannot be set" in p.stdout
    assert (out / "f").read_text() == "data" and stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert not (out / "null").exists()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_stored_blob_damaged_on_disk_is_refused_when_applied(tmp_path, store, compression):
    """Applying a stored compressed blob with its diff_id checks what it decompresses to (the
    store verified the blob's own digest when it stored it); damage is found all the same."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(1 << 20) + bytes(1 << 20))
    info = write_layer(src, store, compression=compression)
    good = apply_blob(store, info.digest, tmp_path / "ok", diff_id=info.diff_id)
    assert (good.digest, good.diff_id, good.size) == (info.digest, info.diff_id, info.size)
    path = store.path(info.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises((DigestMismatch, LayerError)):
        apply_blob(store, info.digest, tmp_path / "bad", diff_id=info.diff_id)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_layer_soko_compressed_is_applied_without_hashing_its_tar_again(tmp_path, store, compression):
    """write_layer notes on its compressed blob the diff_id it hashed; apply_blob asked for that
    diff_id takes the note instead of hashing the tar again (the codec's checksum still checks the
    bytes); any other diff_id asked for is hashed and checked as before."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(300_000))
    (src / "g").write_text("g")
    info = write_layer(src, store, compression=compression)
    assert store.noted_diff_id(info.digest) == info.diff_id
    got = apply_blob(store, info.digest, tmp_path / "a", diff_id=info.diff_id)
    assert (got.diff_id, got.uncompressed_size) == (info.diff_id, info.uncompressed_size)
    assert snapshot(tmp_path / "a") == snapshot(src)
    # The note is what is believed, not a hash: one changed on purpose is taken as it is.
    other = "sha256:" + "1" * 64
    store.note_diff_id(info.digest, other)
    assert apply_blob(store, info.digest, tmp_path / "b", diff_id=other).diff_id == other
    # Asked for anything but the note, the tar is hashed: the true diff_id passes, a wrong one not.
    assert apply_blob(store, info.digest, tmp_path / "c", diff_id=info.diff_id).diff_id == info.diff_id
    with pytest.raises(DigestMismatch, match="diff_id"):
        apply_blob(store, info.digest, tmp_path / "d", diff_id="sha256:" + "2" * 64)
    assert not (tmp_path / "d").exists()


def test_only_compressed_layers_soko_wrote_carry_a_diff_id_note(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    plain = write_layer(src, store, compression="none")  # its digest is its diff_id
    assert store.noted_diff_id(plain.digest) is None
    pushed = store.put_bytes(store.read_bytes(write_layer(src, store, compression="zstd").digest)[:-4])
    assert store.noted_diff_id(pushed) is None  # stored by someone else: nothing known


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_noted_blob_with_a_damaged_checksum_is_refused(tmp_path, store, compression):
    """With the tar not hashed, the codec's own checksum (gzip's CRC-32 and size, zstd's content
    checksum: the last 4 bytes of the frame) is what finds damage to a noted blob."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(200_000))
    info = write_layer(src, store, compression=compression)
    assert store.noted_diff_id(info.digest) == info.diff_id
    path = store.path(info.digest)
    data = bytearray(path.read_bytes())
    data[-8 if compression == "gzip" else -4] ^= 0x01
    st = path.stat()
    path.chmod(0o644)
    path.write_bytes(bytes(data))  # the same file, size and mtime: the note stays
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.noted_diff_id(info.digest) == info.diff_id
    with pytest.raises(LayerError, match="corrupt"):
        apply_blob(store, info.digest, tmp_path / "out", diff_id=info.diff_id)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_noted_blob_written_in_place_through_a_link_is_hashed_again(tmp_path, store, compression):
    """The note belongs to the inode: a blob hard-linked out of the store (a local cache export)
    and overwritten in place there with another valid stream is not believed on its note (its
    size or mtime changed), so the tar is hashed and the wrong layer refused."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d, n in ((a, 1), (b, 2)):
        d.mkdir()
        (d / "f").write_bytes(os.urandom(100_000 * n))
    info = write_layer(a, store, compression=compression)
    other = store.read_bytes(write_layer(b, store, compression=compression).digest)
    outside = tmp_path / "exported-blob"
    os.link(store.path(info.digest), outside)
    outside.chmod(0o644)
    with open(outside, "r+b") as f:  # in place, as `cp` over an existing file or rsync --inplace do
        f.write(other)
        f.truncate()
    assert store.noted_diff_id(info.digest) is None
    with pytest.raises(DigestMismatch, match="diff_id"):
        apply_blob(store, info.digest, tmp_path / "out", diff_id=info.diff_id)
    assert not (tmp_path / "out").exists()


def test_an_entry_the_filesystem_refuses_is_one_line_and_applies_nothing(tmp_path):
    long = "n" * 300  # over NAME_MAX: ENAMETOOLONG from the open
    tar = make_tar([("file", "ok", b"ok"), ("file", long, b"x")])
    with pytest.raises(LayerError) as e:
        apply_layer(io.BytesIO(tar), tmp_path / "out")
    assert str(e.value) == f"cannot apply layer entry {long!r}: File name too long"
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == []
