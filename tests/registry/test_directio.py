"""The O_DIRECT upload writer: exact bytes and digest across aligned blocks,
unaligned tails and reopenings (what a resumed upload does)."""
from __future__ import annotations

import hashlib
import os

import pytest

from registry.server.directio import BLOCK, DirectWriter
from storage.blobs import BlobStore


@pytest.mark.parametrize("direct", [True, False])
def test_pieces_and_resumes(tmp_path, direct):
    store = BlobStore(tmp_path / "store")
    data = os.urandom(2 * BLOCK + 12345)
    cuts = [0, 1, 4095, 4097, BLOCK - 1, BLOCK + 10, BLOCK + 10, 2 * BLOCK + 1, len(data)]
    w = DirectWriter(store, "u1", direct=direct)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        w.write(data[a:b])
        w.flush(sync=False)
        if i % 2:  # reopen as after a restart: offset and hash come from the file
            w.close()
            w = DirectWriter(store, "u1", direct=direct)
            assert w.offset == b
    w.flush(sync=True)
    assert w.offset == len(data)
    assert w.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert w.tmp.read_bytes() == data
    w.close()
    store.adopt(w.tmp, "sha256:" + hashlib.sha256(data).hexdigest())
    assert store.read_bytes("sha256:" + hashlib.sha256(data).hexdigest()) == data


def test_abort_removes_the_file(tmp_path):
    store = BlobStore(tmp_path / "store")
    w = DirectWriter(store, "u2")
    w.write(b"x" * (BLOCK + 5))
    w.abort()
    assert not w.tmp.exists()
