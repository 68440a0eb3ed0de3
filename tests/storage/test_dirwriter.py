"""The directory store's O_DIRECT writer: exact bytes and digest across aligned blocks,
unaligned tails and reopenings (what a resumed upload does)."""
from __future__ import annotations

import hashlib
import os

import pytest

from storage.content.dirwriter import BLOCK, DirectWriter, unlink_unless_busy
from storage.blobs import BlobStore


@pytest.mark.parametrize("direct", [True, False])
def test_pieces_and_resumes(tmp_path, direct):
    store = BlobStore(tmp_path / "store")
    data = os.urandom(2 * BLOCK + 12345)
    cuts = [0, 1, 4095, 4097, BLOCK - 1, BLOCK + 10, BLOCK + 10, 2 * BLOCK + 1, len(data)]
    w = DirectWriter(store, "u1", direct=direct)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        w.write(data[a:b])
        w.flush_sync(sync=False)
        if i % 2:  # reopen as after a restart: offset and hash come from the file
            w.close_sync()
            w = DirectWriter(store, "u1", direct=direct)
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
    w = DirectWriter(store, "u2")
    w.write(b"x" * (BLOCK + 5))
    w.abort_sync()
    assert not w.tmp.exists()


@pytest.mark.parametrize("direct", [True, False])
def test_parked_writer_resumes_without_rereading(tmp_path, direct):
    """Parking keeps only the running hash; resuming from it continues the digest
    (a file changed behind its back is re-hashed instead)."""
    store = BlobStore(tmp_path / "store")
    data = os.urandom(BLOCK + 5000)
    w = DirectWriter(store, "u3", direct=direct)
    w.write(data[:BLOCK - 7])
    parked = w.park_sync()
    assert w.closed and parked.offset == BLOCK - 7
    w = DirectWriter(store, "u3", direct=direct, resume=parked)
    w.write(data[BLOCK - 7:])
    assert w.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    stale = w.park_sync()
    with open(w.tmp, "ab") as f:  # someone else appended: the parked hash no longer covers the file
        f.write(b"more")
    w = DirectWriter(store, "u3", direct=direct, resume=stale)
    assert w.offset == len(data) + 4
    assert w.digest == "sha256:" + hashlib.sha256(data + b"more").hexdigest()
    w.close_sync()


def test_a_file_being_written_is_never_unlinked(tmp_path):
    store = BlobStore(tmp_path / "store")
    w = DirectWriter(store, "u4")
    w.write(b"in progress")
    assert not unlink_unless_busy(w.tmp) and w.tmp.exists()
    w.park_sync()
    assert unlink_unless_busy(w.tmp) and not w.tmp.exists()
