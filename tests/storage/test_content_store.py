"""The content-store contract, one suite run against every backend: the
directory store and the S3 store on a real radosgw."""
from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from storage.content import ContentStore, open_store
from storage.errors import BlobNotFound, DigestMismatch, SizeMismatch
from tests.client.proxy import Proxy

MiB = 1024 * 1024
PART = 5 * MiB


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make(kind: str, where: str) -> ContentStore:
    return open_store(where if kind == "s3" else None, where, part_size=PART)


@pytest.fixture(params=["directory", "s3"])
def where(request, tmp_path) -> tuple[str, str]:
    if request.param == "s3":
        return "s3", request.getfixturevalue("s3_url")
    return "directory", str(tmp_path / "store")


@pytest.fixture
async def store(where):
    s = make(*where)
    await s.open()
    yield s
    await s.close()


async def read_all(store: ContentStore, digest: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([c async for c in store.read(digest, offset, length)])


async def write(store: ContentStore, data: bytes, ref: str | None = None, piece: int = 700_000):
    w = await store.writer(ref)
    for i in range(0, len(data), piece):
        w.write(data[i:i + piece])
        await w.drain()
    return w


async def test_commit_publishes_exactly_the_bytes(store):
    data = os.urandom(PART * 2 + 12345)  # parts, and a short last one
    w = await write(store, data, "one")
    assert w.offset == len(data) and w.digest == sha(data)
    assert await store.stat(sha(data)) is None  # nothing visible before the commit
    info = await w.commit(len(data), sha(data))
    assert (info.digest, info.size) == (sha(data), len(data))
    st = await store.stat(sha(data))
    assert st.size == len(data) and abs(st.modified - time.time()) < 60
    assert await read_all(store, sha(data)) == data
    assert await store.ingest("one") is None and not [i for i in await store.ingests() if i.ref == "one"]
    small = b"a config"
    await store.put(small, sha(small))
    assert await store.read_bytes(sha(small)) == small


async def test_ranged_reads(store):
    data = os.urandom(3 * MiB + 17)
    await store.put(data, sha(data))
    d = sha(data)
    assert await read_all(store, d, 0, 1) == data[:1]
    assert await read_all(store, d, MiB - 3, 2 * MiB) == data[MiB - 3:3 * MiB - 3]
    assert await read_all(store, d, len(data) - 5) == data[-5:]
    assert await read_all(store, d, 10, 0) == b""
    with pytest.raises(BlobNotFound):
        await read_all(store, sha(b"absent"))
    # one way out of the store besides read(): a file (sendfile) or a URL (redirect)
    path, url = store.local_path(d), store.url(d)
    assert (path is not None) != (url is not None) or url is None
    if path is not None:
        assert path.read_bytes() == data


@pytest.mark.parametrize("bad", ["digest", "size"])
async def test_a_wrong_commit_leaves_nothing(store, bad):
    data = os.urandom(PART + 1000)
    w = await write(store, data, "bad")
    await w.flush()
    wrong = sha(data + b"x") if bad == "digest" else sha(data)
    with pytest.raises(DigestMismatch if bad == "digest" else SizeMismatch):
        await w.commit(len(data) + (bad == "size"), wrong)
    assert w.closed
    assert await store.stat(wrong) is None and await store.stat(sha(data)) is None
    assert [b async for b in store.walk()] == []
    assert await store.ingest("bad") is None and await store.ingests() == []


async def test_abort_drops_the_ingest(store):
    w = await write(store, os.urandom(PART + 10), "gone")
    await w.flush()
    assert (await store.ingest("gone")).offset == PART + 10
    await w.abort()
    assert await store.ingest("gone") is None and await store.ingests() == []
    assert [b async for b in store.walk()] == []


async def test_walk_and_delete(store):
    blobs = [os.urandom(n) for n in (0, 1, 1000, MiB)]
    for b in blobs:
        await store.put(b, sha(b))
    found = {i.digest: i.size async for i in store.walk()}
    assert found == {sha(b): len(b) for b in blobs}
    assert await store.delete(sha(blobs[2])) and not await store.delete(sha(blobs[2]))
    await store.delete_many([sha(blobs[0]), sha(blobs[1])])
    assert [i.digest async for i in store.walk()] == [sha(blobs[3])]


async def test_commit_of_a_stored_blob_refreshes_its_time(store):
    """gc's grace counts from the last commit, also when the blob was there."""
    data = b"same bytes"
    await store.put(data, sha(data))
    first = (await store.stat(sha(data))).modified
    await asyncio.sleep(1.1)
    w = await write(store, data)
    await w.commit(len(data), sha(data))
    assert (await store.stat(sha(data))).modified >= first + 1


async def test_concurrent_writers_of_the_same_blob(store):
    data = os.urandom(PART + 333)

    async def one(i: int):
        w = await write(store, data, f"same-{i}", piece=MiB)
        return await w.commit(len(data), sha(data))

    infos = await asyncio.gather(*(one(i) for i in range(4)))
    assert {i.digest for i in infos} == {sha(data)}
    assert await read_all(store, sha(data)) == data
    assert await store.ingests() == []


async def test_an_open_writer_is_busy(store):
    w = await write(store, b"x" * 1000, "held")
    await w.flush()
    assert [i.busy for i in await store.ingests() if i.ref == "held"] == [True]
    assert not await store.abort_ingest("held")
    assert (await store.ingest("held")).offset == 1000
    await w.abort()


async def test_blocking_view_from_a_thread(store):
    data = b"from a worker thread"
    await store.put(data, sha(data))
    b = store.blocking

    def work():
        return b.has(sha(data)), b.stat(sha(data)).size, b.read_bytes(sha(data)), [i.digest for i in b.walk()]

    assert await asyncio.to_thread(work) == (True, len(data), data, [sha(data)])
    assert await asyncio.to_thread(b.delete, sha(data))
    assert not await store.has(sha(data))


async def test_resume_after_a_restart(where, tmp_path):
    """A writer flushed, then a new store (another process, after a crash): the
    offset is what was flushed and the digest continues, without reading back
    what is stored. Through a counting proxy, the S3 store reads back at most
    the bytes after the last whole part."""
    kind, spec = where
    data = os.urandom(3 * PART + 123_456)
    cut = 2 * PART + 1_000_000  # two whole parts and a segment
    first = make(kind, spec)
    await first.open()
    w = await write(first, data[:cut], "resume")
    await w.flush()
    w._closed = True  # as if the process died here: nothing else is written
    w._stop_lease() if hasattr(w, "_stop_lease") else None
    await first.close()

    if kind == "s3":
        endpoint = spec.split("endpoint=")[1].split("&")[0]
        proxy = Proxy(endpoint.split("//")[1]).__enter__()
        spec = spec.replace(endpoint, f"http://{proxy.host}")
    again = make(kind, spec)
    await again.open()
    try:
        w = await again.writer("resume")
        assert w.offset == cut
        before = proxy.down if kind == "s3" else 0
        for i in range(cut, len(data), MiB):
            w.write(data[i:i + MiB])
            await w.drain()
        await w.commit(len(data), sha(data))
        if kind == "s3":
            read_back = proxy.down - before
            assert read_back < (cut - 2 * PART) + 64 * 1024, read_back  # the segment, answers' headers: no parts
        assert await read_all(again, sha(data)) == data
    finally:
        await again.close()
        if kind == "s3":
            proxy.__exit__(None, None, None)


async def test_parked_writer_continues(store):
    data = os.urandom(PART + 4321)
    w = await write(store, data[:3000], "parked")
    parked = await w.park()
    assert w.closed
    w = await store.writer("parked", resume=parked)
    assert w.offset == 3000
    w.write(data[3000:])
    await w.commit(len(data), sha(data))
    assert await read_all(store, sha(data)) == data


async def test_a_stale_parked_state_is_not_trusted(where):
    """Two processes (replicas) on one store: an upload goes on in the other one,
    then comes back here, where the parked state is old: the writer takes the
    stored state, not the stale one."""
    kind, spec = where
    a, b = make(kind, spec), make(kind, spec)
    await a.open()
    await b.open()
    try:
        data = os.urandom(PART + 2 * MiB)
        w = await write(a, data[:MiB], "shared")
        stale = await w.park()
        w = await b.writer("shared")
        assert w.offset == MiB
        w.write(data[MiB:PART + MiB])
        await w.drain()
        await w.park()
        w = await a.writer("shared", resume=stale)
        assert w.offset == PART + MiB
        w.write(data[PART + MiB:])
        await w.commit(len(data), sha(data))
        assert await read_all(a, sha(data)) == data
    finally:
        await a.close()
        await b.close()
