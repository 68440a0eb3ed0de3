"""The directory store's writer, through the page cache and with O_DIRECT: exact bytes
and digest across aligned blocks, unaligned tails and reopenings (what a resumed upload
does), and where the data ends up."""
from __future__ import annotations

import hashlib
import os

import pytest

from storage.blobs import BlobStore
from storage.content import dirwriter
from storage.content.dirwriter import BLOCK, FileWriter, unlink_unless_busy

from ..pagecache import cachestat, resident


@pytest.mark.parametrize("direct", [True, False])
def test_pieces_and_resumes(tmp_path, direct):
    store = BlobStore(tmp_path / "store")
    data = os.urandom(2 * BLOCK + 12345)
    cuts = [0, 1, 4095, 4097, BLOCK - 1, BLOCK + 10, BLOCK + 10, 2 * BLOCK + 1, len(data)]
    w = FileWriter(store, "u1", direct=direct)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        w.write(data[a:b])
        w.flush_sync(sync=False)
        if i % 2:  # reopen as after a restart: offset and hash come from the file
            w.close_sync()
            w = FileWriter(store, "u1", direct=direct)
            assert w.offset == b
    w.flush_sync(sync=True)
    assert w.offset == len(data)
    assert w.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert w.tmp.read_bytes() == data
    w.close_sync()
    store.adopt(w.tmp, "sha256:" + hashlib.sha256(data).hexdigest())
    assert store.read_bytes("sha256:" + hashlib.sha256(data).hexdigest()) == data


def test_abort_removes_the_file(tmp_path):
    store = BlobStore(tmp_path / "store")
    w = FileWriter(store, "u2")
    w.write(b"x" * (BLOCK + 5))
    w.abort_sync()
    assert not w.tmp.exists()


@pytest.mark.parametrize("direct", [True, False])
def test_parked_writer_resumes_without_rereading(tmp_path, direct):
    """Parking keeps only the running hash; resuming from it continues the digest
    (a file changed behind its back is re-hashed instead)."""
    store = BlobStore(tmp_path / "store")
    data = os.urandom(BLOCK + 5000)
    w = FileWriter(store, "u3", direct=direct)
    w.write(data[:BLOCK - 7])
    parked = w.park_sync()
    assert w.closed and parked.offset == BLOCK - 7
    w = FileWriter(store, "u3", direct=direct, resume=parked)
    w.write(data[BLOCK - 7:])
    assert w.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    stale = w.park_sync()
    with open(w.tmp, "ab") as f:  # someone else appended: the parked hash no longer covers the file
        f.write(b"more")
    w = FileWriter(store, "u3", direct=direct, resume=stale)
    assert w.offset == len(data) + 4
    assert w.digest == "sha256:" + hashlib.sha256(data + b"more").hexdigest()
    w.close_sync()


def test_a_file_being_written_is_never_unlinked(tmp_path):
    store = BlobStore(tmp_path / "store")
    w = FileWriter(store, "u4")
    w.write(b"in progress")
    assert not unlink_unless_busy(w.tmp) and w.tmp.exists()
    w.park_sync()
    assert unlink_unless_busy(w.tmp) and not w.tmp.exists()


def _commit_in_pieces(store: BlobStore, ref: str, data: bytes, direct: bool) -> str:
    w = FileWriter(store, ref, direct=direct)
    for i in range(0, len(data), 300_000):  # request-sized pieces, not block-aligned
        w.write(data[i:i + 300_000])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w.commit_sync(len(data), digest)
    return digest


@pytest.fixture
def writeback(monkeypatch) -> int:
    """A smaller writeback range than the real one: the same code, less data to write."""
    monkeypatch.setattr(dirwriter, "WRITEBACK", 2 * BLOCK)
    return 2 * BLOCK


def test_a_committed_blob_stays_in_the_page_cache(tmp_path, writeback):
    """The default writer goes through the page cache (writing back as it goes):
    a blob pushed a moment ago is read from memory, not from the disk."""
    store = BlobStore(tmp_path / "store")
    data = os.urandom(3 * writeback + 12345)
    digest = _commit_in_pieces(store, "u5", data, direct=False)
    assert resident(store.path(digest)) >= len(data) - 4096
    assert store.read_bytes(digest) == data


def test_direct_writes_bypass_the_page_cache(tmp_path, writeback):
    store = BlobStore(tmp_path / "store")
    data = os.urandom(3 * writeback + 12345)
    digest = _commit_in_pieces(store, "u6", data, direct=True)
    assert resident(store.path(digest)) < 2 * BLOCK
    assert store.read_bytes(digest) == data


def test_writeback_starts_as_data_arrives(tmp_path, writeback):
    """Through the page cache, at most WRITEBACK bytes stay dirty: the rest is on
    its way to the disk already, so the fdatasync at commit has little left to do."""
    store = BlobStore(tmp_path / "store")
    w = FileWriter(store, "u7")
    piece = os.urandom(300_000)
    for _ in range(4 * writeback // len(piece)):
        w.write(piece)
    assert cachestat(w.tmp).dirty <= writeback
    w.abort_sync()


def test_at_most_the_writeback_range_is_dirty_at_commit(tmp_path):
    """With the real range: a 30 MiB upload leaves at most 8 MiB for the
    fdatasync before its blob is linked to wait for."""
    store = BlobStore(tmp_path / "store")
    w = FileWriter(store, "u8")
    piece = os.urandom(1 << 20)
    for _ in range(30):
        w.write(piece)
    assert cachestat(w.tmp).dirty <= 8 << 20
    w.abort_sync()


def _reserved(path) -> int:
    """Bytes of disk blocks `path` holds past its size (rounded to pages; the
    filesystem's own extent blocks count too: a few KiB, see SLACK)."""
    st = os.stat(path)
    return st.st_blocks * 512 - -(-st.st_size // 4096) * 4096


SLACK = 64 * 1024


def test_blocks_are_reserved_ahead_of_the_data_then_released(tmp_path):
    """Through the page cache the writer reserves disk blocks ahead of the data
    (no per-page delayed allocation), never more than it has stored; what is
    left past the end is freed when it parks, closes or commits."""
    store = BlobStore(tmp_path / "store")
    piece = os.urandom(1 << 20)
    w = FileWriter(store, "u9")
    w.write(piece)
    assert SLACK < _reserved(w.tmp) <= len(piece) + SLACK
    for _ in range(7):
        w.write(piece)
    assert 4 * len(piece) <= _reserved(w.tmp) <= dirwriter.PREALLOCATE + SLACK
    parked = w.park_sync()
    assert _reserved(w.tmp) < SLACK
    w = FileWriter(store, "u9", resume=parked)
    w.write(piece)
    assert _reserved(w.tmp) > SLACK
    w.close_sync()
    assert _reserved(w.tmp) < SLACK
    w = FileWriter(store, "u9")
    w.write(piece)
    data = 10 * piece
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w.commit_sync(len(data), digest)
    assert _reserved(store.path(digest)) < SLACK
    assert store.read_bytes(digest) == data


def test_a_writer_reopened_after_a_kill_frees_what_the_dead_one_reserved(tmp_path):
    """A writer killed after its last write leaves blocks reserved past the end of its file
    (fallocate KEEP_SIZE); the next writer of that upload commits at once (everything is there)
    and must not keep them: the blob would hold up to PREALLOCATE unseen for its whole life."""
    store = BlobStore(tmp_path / "store")
    data = os.urandom(8 << 20)
    w = FileWriter(store, "u10")
    w.write(data)
    assert _reserved(w.tmp) > SLACK
    os.close(w._fd)  # killed: no park, close or commit ran
    if w._dfd is not None:
        os.close(w._dfd)
    again = FileWriter(store, "u10")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    again.commit_sync(len(data), digest)
    assert _reserved(store.path(digest)) < SLACK
    assert store.read_bytes(digest) == data
