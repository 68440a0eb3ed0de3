"""Dropped connections, wrong bytes, flaky and absent registries."""
from __future__ import annotations

import time

import pytest

from registry.client import ClientOptions, pull, push
from registry.client.errors import (ClientError, HTTPStatusError, Unreachable, VerificationError)
from storage import digests
from tests.client.client_helpers import busybox_layer, free_port, make_image, random_layer
from tests.client.proxy import Proxy

FAST = dict(backoff=0.05, max_backoff=2.0)
SLACK = 64 * 1024  # headers, manifest and config around the big blob


def _one_big_layer(store, ref, size=4_000_000, seed=11):
    layer = random_layer(store, size, seed)
    m = make_image(store, ref, [layer])
    return m, layer[0]


def test_pull_resumes_where_the_connection_dropped(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:r"
    m, big = _one_big_layer(store, ref)
    push(store, ref)
    with Proxy(registry.host, drop_after=("down", big.size // 2)) as px:
        r = pull(store2, f"{px.host}/{repo_name}:r", None, ClientOptions(jobs=1, **FAST))
    assert px.dropped
    assert px.down < big.size + SLACK, f"{px.down} bytes came down for a {big.size}-byte blob"
    assert px.connections >= 2
    assert r.digest == m.digest
    assert digests.of_path(store2.blobs.path(big.digest))[0] == big.digest


def test_pull_resumes_what_an_earlier_process_left(registry, store, store2, repo_name):
    """A killed pull leaves its bytes in the resumable ingest file: the next pull asks only for the rest."""
    ref = f"{registry.host}/{repo_name}:k"
    m, big = _one_big_layer(store, ref, seed=12)
    push(store, ref)
    half = big.size * 3 // 4
    w = store2.blobs.writer(f"pull-sha256-{big.digest[7:]}")
    with open(store.blobs.path(big.digest), "rb") as f:
        w.write(f.read(half))
    w.close()
    with Proxy(registry.host) as px:
        pull(store2, f"{px.host}/{repo_name}:k", None, ClientOptions(jobs=1))
    assert px.down < big.size - half + SLACK
    assert store2.blobs.read_bytes(big.digest) == store.blobs.read_bytes(big.digest)


def test_push_survives_a_dropped_connection(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:p"
    m, big = _one_big_layer(store, ref, seed=13)
    chunk = 512 * 1024
    opts = ClientOptions(jobs=1, monolithic_max=chunk, chunk_size=chunk, **FAST)
    cut = big.size * 5 // 8
    with Proxy(registry.host, drop_after=("up", cut)) as px:
        push(store, ref, f"{px.host}/{repo_name}:p", opts)
    assert px.dropped
    if registry.kind == "soko":
        # resumes at the server's offset: at most the unfinished chunk goes again
        assert px.up < big.size + chunk + SLACK, f"{px.up} bytes went up for a {big.size}-byte blob"
    else:
        # distribution 2.8 cancels an upload whose size no longer matches its signed
        # _state offset, so after a mid-chunk cut the blob starts over once
        assert px.up < cut + big.size + SLACK
    pull(store2, ref)
    assert store2.blobs.read_bytes(big.digest) == store.blobs.read_bytes(big.digest)
    assert store2.resolve(ref).digest == m.digest


def test_push_resumes_after_a_cut_between_chunks(registry, store, store2, repo_name):
    """A drop when a chunk has landed and the next has not started loses nothing:
    the registry reports its offset and the upload continues from there."""
    ref = f"{registry.host}/{repo_name}:b"
    m, big = _one_big_layer(store, ref, seed=14)
    chunk = 1024 * 1024
    opts = ClientOptions(jobs=1, monolithic_max=chunk, chunk_size=chunk, **FAST)
    with Proxy(registry.host, drop_request=(b"PATCH ", 3)) as px:
        push(store, ref, f"{px.host}/{repo_name}:b", opts)
    assert px.dropped
    assert px.up < big.size + SLACK, f"{px.up} bytes went up for a {big.size}-byte blob"
    pull(store2, ref)
    assert store2.blobs.read_bytes(big.digest) == store.blobs.read_bytes(big.digest)


def test_wrong_bytes_are_caught_and_nothing_is_stored(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:c"
    m, big = _one_big_layer(store, ref, seed=15)
    push(store, ref)
    with Proxy(registry.host, corrupt_at=big.size // 2) as px:
        with pytest.raises(VerificationError) as ei:
            pull(store2, f"{px.host}/{repo_name}:c", None, ClientOptions(jobs=1, **FAST))
    assert px.corrupted
    assert big.digest in str(ei.value) and "\n" not in str(ei.value)
    assert not store2.blobs.has(big.digest)
    assert not any(p.name.startswith("upload-") for p, _ in store2.blobs.ingest_entries())
    assert store2.list() == []


def test_retries_on_503_and_429_with_retry_after(registry, store, repo_name):
    ref = f"{registry.host}/{repo_name}:f"
    make_image(store, ref, [busybox_layer(store)])
    with Proxy(registry.host, fail_first=2, fail_status=503) as px:
        push(store, ref, f"{px.host}/{repo_name}:f", ClientOptions(**FAST))
    assert len(px.failed_requests) == 2
    with Proxy(registry.host, fail_first=1, fail_status=429, retry_after="1") as px:
        t0 = time.monotonic()
        push(store, ref, f"{px.host}/{repo_name}:g", ClientOptions(**FAST))
        assert time.monotonic() - t0 >= 1.0  # Retry-After was honoured
    assert px.failed_requests


def test_gives_up_after_the_retries(registry, store, repo_name):
    ref = f"{registry.host}/{repo_name}:h"
    make_image(store, ref, [busybox_layer(store)])
    with Proxy(registry.host, fail_first=100, fail_status=503) as px:
        with pytest.raises(ClientError) as ei:
            push(store, ref, f"{px.host}/{repo_name}:h", ClientOptions(retries=2, **FAST))
    assert "503" in str(ei.value) and "\n" not in str(ei.value)
    assert len(px.failed_requests) == 3
    assert isinstance(ei.value, (HTTPStatusError, Unreachable))


def test_unreachable_registry_is_one_line(store):
    port = free_port()
    make_image(store, f"127.0.0.1:{port}/x/y:1", [busybox_layer(store)])
    with pytest.raises(Unreachable) as ei:
        push(store, f"127.0.0.1:{port}/x/y:1", None, ClientOptions(**FAST))
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "\n" not in msg and "refused" in msg.lower()


def test_missing_image_is_a_clear_404(registry, store2, repo_name):
    with pytest.raises(ClientError) as ei:
        pull(store2, f"{registry.host}/{repo_name}:nope", None, ClientOptions(**FAST))
    msg = str(ei.value)
    assert "not found" in msg and repo_name in msg and "\n" not in msg


async def test_a_cancelled_pull_keeps_what_arrived_for_the_next(registry, store, store2, repo_name):
    """Ctrl-C (task cancellation) mid-blob: the worker thread stops, the bytes stay in
    ingest/, and the next pull asks only for the rest."""
    import asyncio

    from registry.client.pulling import pull_async
    from registry.client.pushing import push_async
    ref = f"{registry.host}/{repo_name}:x"
    m, big = _one_big_layer(store, ref, size=8_000_000, seed=16)
    await push_async(store, ref)
    with Proxy(registry.host) as px:
        started = asyncio.Event()

        def progress(ev):
            if ev.action == "Downloading" and ev.current >= 1_000_000:
                started.set()
        task = asyncio.ensure_future(pull_async(store2, f"{px.host}/{repo_name}:x", None,
                                                ClientOptions(jobs=1), progress))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first = px.down
    assert not store2.blobs.has(big.digest)
    kept = sum(p.stat().st_size for p, _ in store2.blobs.ingest_entries() if p.name.startswith("upload-"))
    assert kept >= 1_000_000
    with Proxy(registry.host) as px:
        await pull_async(store2, f"{px.host}/{repo_name}:x", None, ClientOptions(jobs=1))
    assert px.down < big.size - kept + SLACK
    assert first + px.down < big.size + 2 * SLACK + 4 * 1024 * 1024
    assert store2.blobs.read_bytes(big.digest) == store.blobs.read_bytes(big.digest)



async def test_a_cancelled_download_waits_for_its_reader_thread():
    """However often the download is cancelled, it returns only once the thread that
    writes into the blob writer is done (the writer is closed right after)."""
    import asyncio
    import threading
    import time as _time

    from registry.client.wire import settled as _settled

    done = threading.Event()

    def reader() -> None:
        _time.sleep(0.3)
        done.set()

    async def download() -> None:
        fut = asyncio.get_running_loop().run_in_executor(None, reader)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            await _settled(fut)
            raise

    task = asyncio.ensure_future(download())
    await asyncio.sleep(0.05)
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0.02)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done.is_set()
