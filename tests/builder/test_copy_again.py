"""A COPY run again after one file of many changed: unchanged files are hard-linked from its previous
result (reuse.py) and their data in the new layer is taken from the previous layer's tar
(storage.layers.Donor), giving the very layer a first build of the same files gives."""
from __future__ import annotations

import os
import time

import pytest

from builder.cache import MIGRATIONS
from storage.images import ImageStore
from storage.layers_donor import Donated
from tests.builder.helpers import ImageFS, do_build, import_busybox, write_context

DF = "FROM busybox\nCOPY src/ /src/\n"


@pytest.fixture
def ctx(tmp_path):
    files = {f"src/d{i % 4}/f{i:03d}.txt": f"file {i}\n" * (i % 7 + 1) for i in range(60)}
    root = write_context(tmp_path / "ctx", files)
    old = time.time() - 3600
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    return root


@pytest.fixture
def taken(monkeypatch):
    """How many files' data each layer took from a donor tar."""
    counts: list[int] = []
    real = Donated.close

    def close(self):
        counts.append(self.taken)
        real(self)

    monkeypatch.setattr(Donated, "close", close)
    return counts


def copy_layer(store, ref: str) -> str:
    return store.resolve(ref).config.diff_ids[-1]


def test_an_edit_takes_the_other_files_from_the_previous_tar(store, ctx, taken, tmp_path, busybox_rootfs):
    epoch = 1_700_000_000  # /src is made now (a second apart, two builds differ there): clamped
    do_build(store, ctx, DF, tags=["v1"], source_date_epoch=epoch)
    assert taken == []  # nothing to take from yet
    (ctx / "src/d1/f005.txt").write_text("edited\n")
    time.sleep(0.05)  # past the racy window: the edited file can be linked in turn next time
    do_build(store, ctx, DF, tags=["v2"], source_date_epoch=epoch)
    assert taken == [59]
    assert ImageFS(store, "v2").read("/src/d1/f005.txt") == b"edited\n"
    assert ImageFS(store, "v1").read("/src/d1/f005.txt") == b"file 5\n" * 6
    (ctx / "src/d2/f006.txt").write_text("second edit\n")  # the second result is a donor in turn
    do_build(store, ctx, DF, tags=["v3"], source_date_epoch=epoch)
    assert taken == [59, 59]  # f005 too, from the second tar
    # the layer a store that never saw the earlier files makes of the same context
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, DF, tags=["v3"], source_date_epoch=epoch)
    assert copy_layer(fresh, "v3") == copy_layer(store, "v3")


def test_a_compressed_previous_layer_is_no_donor(store, ctx, taken):
    do_build(store, ctx, DF, compression="gzip")
    (ctx / "src/d0/f000.txt").write_text("x\n")
    do_build(store, ctx, DF, compression="gzip", tags=["g"])
    assert taken == []
    assert ImageFS(store, "g").read("/src/d0/f000.txt") == b"x\n"


def test_a_changed_snapshot_file_is_not_linked_or_taken(store, ctx, taken):
    """A file of the previous result changed behind the builder's back (its lstat is not the
    recorded one): written again from the context, and read from the tree like every file
    not linked (the tar holds what the tree holds)."""
    from runtime.snapshots import Snapshots, chain_ids

    do_build(store, ctx, DF, tags=["v1"])
    snap = Snapshots(store).path(chain_ids(store.resolve("v1").config.diff_ids)[-1])
    victim = snap / "src/d3/f003.txt"
    st = victim.stat()
    other = snap / "src/d3/.other"
    other.write_bytes(b"T" * st.st_size)  # another file put in its place: same size, mode and mtime
    os.chmod(other, st.st_mode & 0o7777)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.rename(victim)
    (ctx / "src/d0/f000.txt").write_text("x\n")
    do_build(store, ctx, DF, tags=["v2"])
    assert ImageFS(store, "v2").read("/src/d3/f003.txt") == b"file 3\n" * 4
    assert taken == [58]
    # the new result's file holds the context's bytes, not the planted ones (an inode number
    # is no proof: the planted file is unlinked and the new one may be given its number)
    rewritten = Snapshots(store).path(chain_ids(store.resolve("v2").config.diff_ids)[-1]) / "src/d3/f003.txt"
    assert rewritten.read_bytes() == b"file 3\n" * 4


def test_default_builds_store_layers_uncompressed(store, ctx):
    from storage import mediatypes as mt

    b = do_build(store, ctx, DF)
    assert store.manifest(b.result.manifest_digest).layers[-1].media_type == mt.OCI_LAYER


def test_old_records_and_snapshot_digests_go_with_the_migration(tmp_path):
    """Stores made before families kept records: their stat-cache rows for snapshot files go."""
    from storage.metadata import MetadataDB
    from builder.context import MIGRATIONS as CONTEXT_MIGRATIONS

    db = MetadataDB(tmp_path / "metadata.db")
    db.migrate("builder", MIGRATIONS[:2])
    db.migrate("builder_context", CONTEXT_MIGRATIONS)
    snap = str(tmp_path / "snapshots" / "abc" / "f")
    ctx_file = str(tmp_path / "ctx" / "f")
    for path in (snap, ctx_file):
        db.execute("INSERT INTO builder_file_hashes(path, size, mtime_ns, inode, digest) VALUES(?,1,1,1,'d')", (path,))
    db.execute("INSERT INTO builder_copy_family(family, chain_id) VALUES('f', 'c')")
    again = MetadataDB(tmp_path / "metadata.db")
    again.migrate("builder", MIGRATIONS)
    assert [r[0] for r in again.query("SELECT path FROM builder_file_hashes")] == [ctx_file]
    assert again.query("SELECT record FROM builder_copy_family")[0][0] is None


def test_many_files_written_side_by_side_keep_content_mode_owner_and_mtime(store, ctx, monkeypatch):
    """A directory source of many files is written by several threads (copy.WRITERS) and hashed
    by several (context.READERS, once a batch of reads was slow: made so here): every file still
    lands whole, with its mode, owner and mtime."""
    import threading

    from builder import context
    from builder.copy import WRITERS

    monkeypatch.setattr(context, "BATCH", 4)
    monkeypatch.setattr(context, "SLOW_READ", 0.0)  # every batch "waited on the disk"
    hashed_on = set()
    real_digest = context.HashCache.digest

    def digest(self, *a, **kw):
        hashed_on.add(threading.get_ident())
        return real_digest(self, *a, **kw)

    monkeypatch.setattr(context.HashCache, "digest", digest)
    files = sorted(p for p in (ctx / "src").rglob("*") if p.is_file())
    assert len(files) >= 4 * WRITERS
    for i, p in enumerate(files):
        os.chmod(p, 0o600 if i % 3 else 0o755)
    do_build(store, ctx, "FROM busybox\nCOPY --chown=7:8 src/ /a/\nCOPY --chmod=640 src/ /b/\n", tags=["m"])
    assert len(hashed_on) > 1
    fs = ImageFS(store, "m")
    for p in files:
        rel = p.relative_to(ctx / "src")
        st = p.stat()
        assert fs.read(f"/a/{rel}") == p.read_bytes() == fs.read(f"/b/{rel}")
        a = fs.stat(f"/a/{rel}")
        assert (a.st_mode & 0o7777, a.st_uid, a.st_gid, a.st_mtime_ns) == (st.st_mode & 0o7777, 7, 8, st.st_mtime_ns)
        assert fs.mode(f"/b/{rel}") == 0o640 and fs.owner(f"/b/{rel}") == (0, 0)


def test_owner_and_mode_whatever_creating_the_file_gave(store, tmp_path):
    """copy_file sets owner and mode only where creating the file did not give them: a setgid
    directory of the image (its group is inherited), setuid bits with --chown (chown clears them),
    modes the umask would cut."""
    ctx = write_context(tmp_path / "c", {"suid": "s", "open": "o", "plain": "p"})
    os.chmod(ctx / "suid", 0o4755)
    os.chmod(ctx / "open", 0o666)
    old = os.umask(0o077)
    try:
        do_build(store, ctx, "FROM busybox\nRUN mkdir -m 2775 /shared && chgrp 50 /shared\n"
                             "COPY plain suid open /shared/\nCOPY plain suid open /top/\n"
                             "COPY --chown=7:8 suid /owned\n", tags=["o"])
    finally:
        os.umask(old)
    fs = ImageFS(store, "o")
    for d in ("shared", "top"):
        assert [(fs.owner(f"/{d}/{n}"), fs.mode(f"/{d}/{n}")) for n in ("plain", "suid", "open")] == \
            [((0, 0), 0o644), ((0, 0), 0o4755), ((0, 0), 0o666)], d
    assert (fs.owner("/owned"), fs.mode("/owned")) == ((7, 8), 0o4755)
    assert fs.owner("/shared") == (0, 50) and fs.mode("/shared") == 0o2775


def test_files_written_from_memory_give_the_layer_that_reading_them_gives(store, tmp_path, busybox_rootfs,
                                                                           monkeypatch):
    """Small context files read for their digest are written from those bytes, and the layer takes
    them from there instead of reading each file again (HashCache.content, write_layer(written=)).
    A later source writing the same path (here a heredoc of the same size) wins in the layer too:
    the layer is the one a build that keeps nothing in memory makes."""
    import tarfile
    import io

    from builder import context, layerio

    files = {f"src/d{i % 3}/f{i:02d}.txt": f"file {i}\n" for i in range(20)}
    files["src/x.txt"] = "ABCD\n"
    ctx = write_context(tmp_path / "ctx", files)
    df = "FROM busybox\nCOPY src/ <<x.txt /dst/\nHELO\nx.txt\n"
    passed = []
    real = layerio.write_dir

    def write_dir(*a, **kw):
        passed.append(len(kw.get("written") or ()))
        return real(*a, **kw)

    monkeypatch.setattr(layerio, "write_dir", write_dir)
    epoch = 1_700_000_000
    do_build(store, ctx, df, tags=["kept"], source_date_epoch=epoch)
    assert passed[-1] == 20  # every file of src/ but x.txt, which the heredoc wrote over
    monkeypatch.setattr(context, "KEEP_FILE", -1)  # nothing kept: every file read from the tree
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, df, tags=["read"], source_date_epoch=epoch)
    assert passed[-1] == 0
    assert copy_layer(store, "kept") == copy_layer(fresh, "read")
    layer = store.blobs.read_bytes(store.resolve("kept").manifest.layers[-1].digest)
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        assert t.extractfile("dst/x.txt").read() == b"HELO\n"


def test_an_edit_in_a_context_of_more_directories_than_descriptors(store, tmp_path):
    """The rebuild links unchanged files directory by directory: it must not hold a descriptor
    per directory (a tree of more directories than the soft RLIMIT_NOFILE failed with EMFILE)."""
    import resource

    files = {f"src/d{i:03d}/f.txt": f"file {i}\n" for i in range(300)}
    root = write_context(tmp_path / "many", files)
    old = time.time() - 3600
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    do_build(store, root, DF, tags=["v1"])
    (root / "src/d007/f.txt").write_text("edited\n")
    # 200 more than are open now (this process may hold snapshots of earlier tests: snapholds.py)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 200, hard))
    try:
        do_build(store, root, DF, tags=["v2"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert ImageFS(store, "v2").read("/src/d007/f.txt") == b"edited\n"
    assert ImageFS(store, "v2").read("/src/d123/f.txt") == b"file 123\n"


def test_a_copy_looks_each_files_digest_up_once(store, ctx, monkeypatch):
    """Placing a file asks the hash cache for its digest once, for the hard link from
    the previous result and for the copy alike (a file that could not be linked was
    looked up again before it was written), in a directory COPY and a single file's."""
    from collections import Counter

    from builder import context

    (ctx / "one.txt").write_text("one\n")
    do_build(store, ctx, DF + "COPY one.txt /one\n", tags=["v1"])
    (ctx / "src/d1/f005.txt").write_text("edited\n")
    (ctx / "one.txt").write_text("edited too\n")
    time.sleep(0.05)
    asked: Counter = Counter()
    real = context.HashCache.known

    def known(self, path, st, root):
        asked[str(path)] += 1
        return real(self, path, st, root)

    monkeypatch.setattr(context.HashCache, "known", known)
    do_build(store, ctx, DF + "COPY one.txt /one\n", tags=["v2"])
    assert ImageFS(store, "v2").read("/src/d1/f005.txt") == b"edited\n"
    assert ImageFS(store, "v2").read("/one") == b"edited too\n"
    assert len(asked) == 61 and max(asked.values()) == 1, asked.most_common(3)
