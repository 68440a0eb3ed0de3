"""Digests and the blob store: grammar, atomic verified writes, resumption, crash safety."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage import digests
from storage.blobs import BlobStore
from storage.errors import BlobNotFound, DigestError, DigestMismatch, SizeMismatch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("good", ["sha256:" + "a" * 64, "sha512:" + "0" * 128])
def test_valid_digests(good):
    assert str(digests.parse(good)) == good


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("size", [0, 1, 4096, digests.SMALL - 1, digests.SMALL, 3 * digests.SMALL + 5])
def test_of_bytes_is_hashlibs_digest_whatever_computes_it(algorithm, size):
    """Small data is hashed without OpenSSL (digests._small), big data with it: the same digest."""
    data = os.urandom(size)
    assert digests.of_bytes(data, algorithm) == f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    if size < digests.SMALL:
        assert digests._small(algorithm) is not None  # CPython's own sha256/sha512 is there


def test_small_digests_do_not_load_openssl():
    code = ("import sys\nfrom storage import digests\n"
            "assert digests.of_bytes(b'x' * 5000).startswith('sha256:')\n"
            "print('_hashlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("bad", ["", "sha256", "sha256:", "sha256:" + "A" * 64, "sha256:" + "a" * 63,
                                 "md5:" + "a" * 32, "sha512:" + "a" * 64, "SHA256:" + "a" * 64,
                                 "sha256:../../etc/passwd", "sha256:" + "a" * 64 + "\n",
                                 "sha256:" + "a" * 63 + "\u0661", "sha256\n:" + "a" * 64])
def test_invalid_digests(bad):
    with pytest.raises(DigestError):
        digests.parse(bad)


def test_put_and_read(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(3 * digests.CHUNK + 17)
    d = store.put_bytes(data)
    assert d == "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.path(d) == tmp_path / "blobs" / "sha256" / d[7:]
    assert store.read_bytes(d) == data
    assert store.size(d) == len(data)
    assert b"".join(store.read_range(d, 10, 1000)) == data[10:1010]
    assert b"".join(store.read_range(d, len(data) - 5)) == data[-5:]
    assert list(store) == [d]
    assert not list(store.ingest_dir.iterdir())


def test_sha512_expected(tmp_path):
    store = BlobStore(tmp_path)
    data = b"hello sha512"
    expected = "sha512:" + hashlib.sha512(data).hexdigest()
    assert store.put_bytes(data, expected) == expected
    assert store.has(expected)


def test_wrong_digest_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as e:
        store.put_bytes(b"content", wrong)
    assert wrong in str(e.value)
    assert list(store) == []
    assert not list(store.ingest_dir.iterdir())
    with pytest.raises(BlobNotFound):
        store.open(wrong)


@pytest.mark.parametrize("declared", [4, 5, 6], ids=["one-byte-longer", "exact", "one-byte-shorter"])
@pytest.mark.parametrize("resumable", [False, True])
def test_commit_refuses_a_blob_whose_size_is_not_the_declared_one(tmp_path, declared, resumable):
    """The digest is right; only the size differs, by one byte either way."""
    store = BlobStore(tmp_path)
    data = b"12345"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w = store.writer("up1" if resumable else None)
    w.write(data)
    if declared != len(data):
        with pytest.raises(SizeMismatch, match=f"expected {declared} bytes, got 5"):
            w.commit(digest, declared)
        w.close()
        assert list(store) == [] and not store.has(digest)
        assert list(store.ingest_dir.iterdir()) == []  # not even a partial upload
    else:
        assert w.commit(digest, declared) == digest
        assert store.read_bytes(digest) == data
    with pytest.raises(SizeMismatch):
        store.put_stream([data], digest, len(data) - 1)
    assert list(store) == ([digest] if declared == len(data) else [])


def test_concurrent_writers_of_same_blob(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(4 * digests.CHUNK)
    results, errors = [], []

    def write():
        try:
            w = store.writer()
            for i in range(0, len(data), 65536):
                w.write(data[i:i + 65536])
            results.append(w.commit())
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert store.read_bytes(results[0]) == data
    assert not list(store.ingest_dir.iterdir())


def test_resumable_writer_survives_reopen(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(1000)
    w = store.writer("upload1")
    w.write(data[:400])
    w.close()  # e.g. the process ends; data stays in ingest/
    w2 = BlobStore(tmp_path).writer("upload1")
    assert w2.offset == 400
    w2.write(data[400:])
    d = w2.commit("sha256:" + hashlib.sha256(data).hexdigest())
    assert store.read_bytes(d) == data
    assert not list(store.ingest_dir.iterdir())


def test_invalid_ingest_id(tmp_path):
    from storage.errors import StorageError

    with pytest.raises(StorageError):
        BlobStore(tmp_path).writer("../escape")


WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from storage.blobs import BlobStore
store = BlobStore(sys.argv[1])
w = store.writer()
chunk = b"z" * (1 << 20)
for i in range(64):
    w.write(chunk)
    if i == 8:
        print("midway", flush=True)
        time.sleep(60)
print(w.commit(), flush=True)
"""


def test_killed_writer_leaves_no_visible_blob(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    root = tmp_path / "store"
    p = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "midway"
    p.send_signal(signal.SIGKILL)
    p.wait()
    store = BlobStore(root)
    assert list(store) == []  # nothing visible
    leftovers = list(store.ingest_dir.iterdir())
    assert leftovers  # the partial temp file, invisible as a blob
    # running it again (without the pause) succeeds
    script.write_text(WRITER.format(repo=str(REPO)).replace("time.sleep(60)", "pass"))
    out = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, check=True)
    digest = out.stdout.strip().splitlines()[-1]
    assert store.size(digest) == 64 << 20
    assert digests.of_path(store.path(digest))[0] == digest
    # an abandoned ingest file is swept by age
    old = time.time() - 7200
    for f in leftovers:
        os.utime(f, (old, old))
    assert store.clean_ingest(3600) == len(leftovers)
