"""Writing layers: trees, change sets, overlayfs upper dirs; determinism; GNU tar interop."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import need_root
from storage import compression as comp
from storage.blobs import BlobStore
from storage.errors import LayerError
from storage.layers import (Changes, apply_blob, digest_layer, write_layer,
                            write_layer_from_changes, write_layer_from_overlay)
from tests.storage.test_layers_support import overlay_mount, snapshot, tar_members, tar_names


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def make_tree(root: Path) -> Path:
    (root / "etc" / "app.d").mkdir(parents=True)
    (root / "etc" / "app.d" / "default.cfg").write_text("key = value\n")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(os.urandom(200_000) + bytes(300_000))
    os.chmod(root / "bin" / "tool", 0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    os.symlink("tool", root / "bin" / "alias")
    os.symlink("/etc/passwd", root / "etc" / "abs-link")
    (root / "empty").mkdir()
    (root / "zero").write_bytes(b"")
    return root


def test_layer_info_describes_blob_and_diff(tmp_path, store):
    src = make_tree(tmp_path / "src")
    for kind in ("gzip", "zstd", "none"):
        info = write_layer(src, store, compression=kind)
        blob = store.read_bytes(info.digest)
        assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert info.size == len(blob)
        raw = comp.DecompressingReader(io.BytesIO(blob)).read()
        assert info.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert info.uncompressed_size == len(raw)
        assert info.compression == kind == comp.detect(blob)
    assert info.digest == info.diff_id  # uncompressed: the blob is the tar
    oci = write_layer(src, store, compression="gzip")
    docker = write_layer(src, store, compression="gzip", media_types="docker")
    assert oci.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert docker.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert (oci.diff_id, oci.digest) == (docker.diff_id, docker.digest)
    assert write_layer(src, store, compression="zstd").media_type.endswith("+zstd")


def test_entries_sorted_pax_numeric_owners(tmp_path, store):
    src = make_tree(tmp_path / "src")
    os.chown(src / "etc" / "passwd", 1234, 5678) if os.geteuid() == 0 else None
    info = write_layer(src, store)
    members = tar_members(store.read_bytes(info.digest))
    names = [m.name for m in members]
    assert names == ["bin", "bin/alias", "bin/tool", "bin/tool-again", "empty", "etc",
                     "etc/abs-link", "etc/app.d", "etc/app.d/default.cfg", "etc/passwd", "zero"]
    for m in members:
        assert m.uname == "" and m.gname == ""
    by = {m.name: m for m in members}
    assert by["bin/tool"].mode == 0o4755
    assert by["bin/alias"].issym() and by["bin/alias"].linkname == "tool"
    assert by["etc/abs-link"].linkname == "/etc/passwd"  # absolute targets as they are
    if os.geteuid() == 0:
        assert (by["etc/passwd"].uid, by["etc/passwd"].gid) == (1234, 5678)


def test_hardlinks_are_tar_links_to_the_first_path(tmp_path, store):
    src = make_tree(tmp_path / "src")
    by = {m.name: m for m in tar_members(store.read_bytes(write_layer(src, store).digest))}
    assert by["bin/tool"].isreg() and by["bin/tool"].size == 500_000
    assert by["bin/tool-again"].islnk() and by["bin/tool-again"].linkname == "bin/tool"


def test_same_tree_twice_gives_same_digests(tmp_path, store):
    src = make_tree(tmp_path / "src")
    for kind in ("gzip", "zstd"):
        a = write_layer(src, store, compression=kind)
        b = write_layer(src, store, compression=kind)
        assert (a.digest, a.diff_id) == (b.digest, b.diff_id)


def test_source_date_epoch_makes_layers_byte_identical(tmp_path, store, monkeypatch):
    src = make_tree(tmp_path / "src")
    epoch = int(time.time()) - 86400
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    first = write_layer(src, store)
    before = write_layer(src, store, epoch=None)
    time.sleep(1.1)
    for p in [src, *src.rglob("*")]:
        os.utime(p, follow_symlinks=False)  # now: newer than the epoch
    again = write_layer(src, store)
    assert first.digest == before.digest == again.digest
    assert store.read_bytes(first.digest) == store.read_bytes(again.digest)
    mtimes = {m.name: m.mtime for m in tar_members(store.read_bytes(again.digest))}
    assert set(mtimes.values()) == {epoch}
    # Without the clamp the touched tree is a different layer (the test can fail).
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert write_layer(src, store).digest != first.digest
    # An explicit epoch does the same as the variable; older mtimes stay.
    old = src / "old"
    old.write_text("old")
    os.utime(old, (1000, 1000))
    explicit = write_layer(src, store, epoch=epoch)
    mt = {m.name: m.mtime for m in tar_members(store.read_bytes(explicit.digest))}
    assert mt["old"] == 1000 and mt["etc/passwd"] == epoch


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_source_date_epoch_boundaries(tmp_path, store, monkeypatch, how):
    """Clamping is `min(mtime, epoch)` on whole seconds: one second before
    stays, the epoch itself stays, one second (or a fraction) after becomes
    the epoch; for files, directories and symlinks alike."""
    epoch = 1_700_000_000
    src = tmp_path / "src"
    src.mkdir()
    ns = 1_000_000_000
    mtimes = {"before": (epoch - 1) * ns, "at": epoch * ns, "after": (epoch + 1) * ns,
              "just-after": epoch * ns + ns - 1, "just-before": epoch * ns - 1, "far": (epoch + 10**6) * ns}
    for name, t in mtimes.items():
        (src / name).write_text(name)
        os.symlink(name, src / f"link-{name}")
        (src / f"dir-{name}").mkdir()
    for name, t in mtimes.items():  # after creating, so the directory times stay put
        for p in (src / name, src / f"link-{name}", src / f"dir-{name}"):
            os.utime(p, ns=(t, t), follow_symlinks=False)
    if how == "environment":
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
        info = write_layer(src, store)
    else:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
        info = write_layer(src, store, epoch=epoch)
    got = {m.name.rstrip("/"): m.mtime for m in tar_members(store.read_bytes(info.digest))}
    want = {"before": epoch - 1, "at": epoch, "after": epoch, "just-after": epoch, "just-before": epoch - 1,
            "far": epoch}
    for name, t in want.items():
        assert (got[name], got[f"link-{name}"], got[f"dir-{name}"]) == (t, t, t), name


def test_bad_source_date_epoch(tmp_path, store, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(LayerError, match="SOURCE_DATE_EPOCH"):
        write_layer(make_tree(tmp_path / "src"), store)


def test_xattrs_capabilities_devices_fifos(tmp_path, store):
    need_root()
    src = make_tree(tmp_path / "src")
    os.setxattr(src / "etc" / "passwd", "user.note", b"hello\0world")
    subprocess.run(["setcap", "cap_net_bind_service=+ep", str(src / "bin" / "tool")], check=True)
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(src / "disk", 0o660 | 0o060000, os.makedev(8, 1))
    os.mkfifo(src / "pipe", 0o600)
    info = write_layer(src, store)
    by = {m.name: m for m in tar_members(store.read_bytes(info.digest))}
    assert by["etc/passwd"].pax_headers["SCHILY.xattr.user.note"] == "hello\0world"
    assert "SCHILY.xattr.security.capability" in by["bin/tool"].pax_headers
    assert by["null"].ischr() and (by["null"].devmajor, by["null"].devminor) == (1, 3)
    assert by["disk"].isblk() and (by["disk"].devmajor, by["disk"].devminor) == (8, 1)
    assert by["pipe"].isfifo()
    out = tmp_path / "out"
    apply_blob(store, info.digest, out, diff_id=info.diff_id)
    assert snapshot(out) == snapshot(src)
    getcap = subprocess.run(["getcap", str(out / "bin" / "tool")], capture_output=True, text=True)
    assert "cap_net_bind_service" in getcap.stdout


def test_gnu_tar_reads_soko_layers(tmp_path, store):
    need_root()  # GNU tar restores owners and xattrs only as root
    src = make_tree(tmp_path / "src")
    os.setxattr(src / "etc" / "passwd", "user.note", b"v")
    long_dir = src / ("d" * 80) / ("e" * 80)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 120)).write_text("deep")
    os.symlink("x" * 150, src / "long-link")
    (src / "caf\xe9-ünï").write_text("names")
    for kind, flag in (("gzip", "-z"), ("zstd", "--zstd")):
        info = write_layer(src, store, compression=kind)
        blob = store.path(info.digest)
        listing = subprocess.run(["tar", flag, "-tf", str(blob)], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        assert "etc/passwd" in listing and "bin/tool-again" in listing
        assert f"{'d' * 80}/{'e' * 80}/{'f' * 120}" in listing
        out = tmp_path / f"gnu-{kind}"
        out.mkdir()
        subprocess.run(["tar", flag, "-xpf", str(blob), "-C", str(out), "--xattrs",
                        "--xattrs-include=*", "--numeric-owner"], check=True)
        os.utime(out, ns=(src.stat().st_mtime_ns,) * 2)
        assert snapshot(out) == snapshot(src)
        assert os.stat(out / "bin/tool").st_ino == os.stat(out / "bin/tool-again").st_ino


def test_reserved_whiteout_names_are_refused(tmp_path, store):
    src = make_tree(tmp_path / "src")
    (src / "etc" / ".wh.passwd").write_text("")
    with pytest.raises(LayerError, match="reserved for whiteouts"):
        write_layer(src, store)
    assert list(store) == [] and list(store.ingest_dir.iterdir()) == []


def test_changes_layer_whiteouts_first_and_parents_included(tmp_path, store):
    root = make_tree(tmp_path / "root")
    (root / "var" / "cache").mkdir(parents=True)
    (root / "var" / "cache" / "new").write_text("n")
    changes = Changes(paths=["etc/app.d/default.cfg", "/bin/tool", "var/cache/new"],
                      deleted=["etc/old-config", "etc/gone-dir"], opaque=["var/cache"])
    info = write_layer_from_changes(root, changes, store)
    names = tar_names(store.read_bytes(info.digest))
    assert names == ["bin", "bin/tool", "etc", "etc/.wh.gone-dir", "etc/.wh.old-config",
                     "etc/app.d", "etc/app.d/default.cfg", "var", "var/cache",
                     "var/cache/.wh..wh..opq", "var/cache/new"]
    by = {m.name: m for m in tar_members(store.read_bytes(info.digest))}
    assert by["etc/.wh.old-config"].isreg() and by["etc/.wh.old-config"].size == 0
    # bin/tool has a hard link outside the change set: it is written as a file
    assert by["bin/tool"].isreg() and by["bin/tool"].size == 500_000


def test_changes_layer_rejects_missing_and_bad_paths(tmp_path, store):
    root = make_tree(tmp_path / "root")
    with pytest.raises(LayerError, match="does not exist"):
        write_layer_from_changes(root, Changes(paths=["etc/nope"]), store)
    with pytest.raises(LayerError, match="invalid"):
        write_layer_from_changes(root, Changes(paths=["../etc"]), store)
    with pytest.raises(LayerError, match="not a directory"):
        write_layer_from_changes(root, Changes(paths=["etc/passwd/x"]), store)
    assert list(store) == []


def test_progress_reports_uncompressed_bytes(tmp_path, store):
    src = make_tree(tmp_path / "src")
    seen: list[int] = []
    info = write_layer(src, store, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == info.uncompressed_size


def test_overlay_upper_becomes_layer_with_oci_whiteouts(tmp_path, store):
    need_root()
    lower = make_tree(tmp_path / "lower")
    (lower / "var" / "lib" / "old").mkdir(parents=True)
    (lower / "var" / "lib" / "old" / "a").write_text("a")
    (lower / "var" / "lib" / "keep").write_text("keep")
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    with overlay_mount([lower], upper, work, merged, "redirect_dir=off,metacopy=off"):
        (merged / "etc" / "passwd").write_text("changed\n")
        (merged / "etc" / "app.d" / "default.cfg").unlink()
        (merged / "new-file").write_text("new")
        os.link(merged / "new-file", merged / "new-link")
        subprocess.run(["rm", "-rf", str(merged / "var" / "lib" / "old")], check=True)
        subprocess.run(["rm", "-rf", str(merged / "etc" / "app.d")], check=True)
        (merged / "etc" / "app.d").mkdir()  # deleted and made again: opaque
        (merged / "etc" / "app.d" / "fresh.cfg").write_text("fresh")
        os.setxattr(merged / "new-file", "user.origin", b"run")
        expected = snapshot(merged, mtimes=False)
    info = write_layer_from_overlay(upper, store)
    members = tar_members(store.read_bytes(info.digest))
    names = [m.name for m in members]
    assert "var/lib/.wh.old" in names
    assert "etc/app.d/.wh..wh..opq" in names
    assert names.index("etc/app.d/.wh..wh..opq") < names.index("etc/app.d/fresh.cfg")
    assert "etc/app.d/.wh.default.cfg" not in names  # hidden by the opaque directory
    assert "bin/tool" not in names  # untouched lower content is not in the layer
    for m in members:
        assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for k in m.pax_headers)
        assert not (m.ischr() and m.devmajor == 0 and m.devminor == 0)
    by = {m.name: m for m in members}
    assert by["new-link"].islnk() and by["new-link"].linkname == "new-file"
    # lower + layer applied in plain mode is what the overlay showed
    base = write_layer(lower, store)
    out = tmp_path / "out"
    apply_blob(store, base.digest, out)
    apply_blob(store, info.digest, out)
    assert snapshot(out, mtimes=False) == expected


def test_overlay_upper_with_redirects_is_refused(tmp_path, store):
    need_root()
    lower = make_tree(tmp_path / "lower")
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    with overlay_mount([lower], upper, work, merged, "redirect_dir=on"):
        os.rename(merged / "etc", merged / "etc2")
    with pytest.raises(LayerError, match="redirect"):
        write_layer_from_overlay(upper, store)
    assert list(store) == []


def test_digest_layer_matches_what_was_written(tmp_path, store):
    src = make_tree(tmp_path / "src")
    for kind in ("gzip", "zstd", "none"):
        info = write_layer(src, store, compression=kind)
        with store.open(info.digest) as f:
            d = digest_layer(f)
        assert (d.diff_id, d.digest, d.size, d.uncompressed_size, d.compression) == \
            (info.diff_id, info.digest, info.size, info.uncompressed_size, kind)
    data = store.read_bytes(write_layer(src, store, compression="zstd").digest)
    with pytest.raises(LayerError, match="truncated zstd stream"):
        digest_layer(io.BytesIO(data[:-10]))


def test_headers_are_what_python_tarfile_reads_back():
    """Each ustar block soko assembles (checksum over its pieces) parses back to the same fields."""
    import random
    import tarfile

    from storage import layers_tar as tar

    r = random.Random(7)
    for _ in range(2000):
        name = bytes(r.choice(b"abcxyz019._-+=~") for _ in range(r.randrange(1, 101)))
        link = bytes(r.randrange(33, 127) for _ in range(r.randrange(0, 100)))
        mode, uid, gid = r.randrange(0o10000), r.randrange(0o10000000), r.randrange(0o10000000)
        size, mtime = r.randrange(0o100000000000), r.randrange(0o100000000000)
        kind = r.choice([tar.REG, tar.SYM, tar.DIR, tar.CHR])
        major, minor = (r.randrange(256), r.randrange(256)) if kind == tar.CHR else (0, 0)
        block = tar.encode_header(name, mode=mode, uid=uid, gid=gid, size=size, mtime=mtime, typeflag=kind,
                                  linkname=link, devmajor=major, devminor=minor)
        assert len(block) == tar.BLOCK
        info = tarfile.TarInfo.frombuf(block, "ascii", "strict")  # checks the checksum
        assert (info.name.encode(), info.mode, info.uid, info.gid, info.mtime, info.type) == \
            (name, mode, uid, gid, mtime, kind)
        assert info.linkname.encode() == link and (info.devmajor, info.devminor) == (major, minor)
        if kind == tar.REG:
            assert info.size == size


def test_the_blob_is_written_back_while_the_layer_is_written(tmp_path, store, monkeypatch):
    """Writeback of the compressed blob starts as it grows, so the fsync that makes it
    durable has at most WRITEBACK bytes left to wait for instead of the whole blob."""
    from storage import layers_write
    from tests.pagecache import cachestat

    writeback = 2 << 20
    monkeypatch.setattr(layers_write, "WRITEBACK", writeback)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(16):
        (src / f"f{i}").write_bytes(os.urandom(2 << 20))  # incompressible: a 32 MiB blob
    for kind in ("zstd", "gzip", "none"):
        dirty: list[int] = []
        done = threading.Event()

        def watch() -> None:  # the blob is written on the compressor's threads: look often
            while not done.is_set():
                for tmp in store.ingest_dir.glob("*.layer"):
                    try:
                        dirty.append(cachestat(tmp).dirty)
                    except FileNotFoundError:
                        pass
                time.sleep(0.002)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            info = write_layer(src, store, compression=kind)
        finally:
            done.set()
            watcher.join()
        assert info.size > 30 << 20
        assert len(dirty) > 5 and max(dirty) <= 2 * writeback + (2 << 20), (kind, max(dirty))


def test_tar_padding_is_zeros_and_the_tar_the_same_for_every_compression(tmp_path, store):
    """The zstd and plain writers refill one buffer for the whole layer: what a file's
    padding skips over must be zeros, not the bytes of an earlier piece."""
    import random
    import tarfile

    r = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):  # ~5 MiB of bytes with no zeros, sizes no multiple of 512
        (src / f"f{i:02d}").write_bytes(bytes(r.randrange(1, 256) for _ in range(r.randint(1, 250_000))))
    tars = {}
    for kind in ("gzip", "zstd", "none"):
        info = write_layer(src, store, compression=kind)
        tars[kind] = comp.DecompressingReader(io.BytesIO(store.read_bytes(info.digest))).read()
        assert info.diff_id == "sha256:" + hashlib.sha256(tars[kind]).hexdigest()
    assert tars["gzip"] == tars["zstd"] == tars["none"]
    raw = tars["zstd"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = [m for m in tf.getmembers() if m.isreg()]
    assert len(members) == 40
    for m in members:
        end = m.offset_data + m.size
        assert raw[end:end + (-m.size % 512)].count(0) == -m.size % 512, m.name


def test_zstd_layer_is_the_same_bytes_whatever_the_buffer_and_thread_count(tmp_path, store, monkeypatch):
    """The tar is fed to libzstd in REUSED_CHUNK pieces (once 1 MiB ones): the blob must be
    libzstd's one frame of the whole tar, the same whatever the pieces and worker count."""
    import random

    from storage import layers_write
    from tests.storage.test_compression import several_jobs

    data = several_jobs(20 << 20)  # more than two of libzstd's 8 MiB jobs
    r = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    at = 0
    for i in range(60):  # sizes crossing the buffers' edges
        n = r.randint(1, 700_000) if i % 10 else r.randint(1 << 20, 3 << 20)
        (src / f"f{i:02d}").write_bytes(data[at:at + n])
        at += n
    tar = store.read_bytes(write_layer(src, store, compression="none").digest)
    whole = comp.open_writer(out := io.BytesIO(), "zstd", threads=1)
    whole.write(tar)  # one piece
    whole.close()
    want = "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    digests = set()
    for chunk in (layers_write.REUSED_CHUNK, 1 << 20, 4096 * 3):
        monkeypatch.setattr(layers_write, "REUSED_CHUNK", chunk)
        for threads in (1, 2):
            info = write_layer(src, store, compression="zstd", threads=threads)
            assert info.digest == want, (chunk, threads)  # (not the bytes: pytest's diff of them is slow)
            digests.add(info.digest)
    assert len(digests) == 1 and len(tar) > 16 << 20


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_full_disk_under_the_compressed_output_is_one_line_and_leaves_nothing(tmp_path, compression):
    """A failure to write the compressed output (here ENOSPC on a 1 MiB tmpfs) reaches the
    caller as one LayerError line, stops the write, and leaves neither a blob nor anything in
    ingest/."""
    need_root()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "soko-test-small", str(small)], check=True)
    try:
        store = BlobStore(small / "store")
        src = tmp_path / "src"
        src.mkdir()
        for i in range(6):  # random: it does not compress
            (src / f"f{i}").write_bytes(os.urandom(1 << 20))
        with pytest.raises(LayerError, match="^cannot write layer: No space left on device$"):
            write_layer(src, store, compression=compression)
        assert os.listdir(store.ingest_dir) == []
        assert list(store) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
