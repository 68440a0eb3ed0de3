"""Retries of real requests, not only the first `GET /v2/`: the Nth manifest GET or
PUT, blob GET, upload PATCH or closing PUT answered 503/429 (with Retry-After),
and giving up after the configured attempts with a one-line error."""
from __future__ import annotations

import time

import pytest

from registry.client import ClientOptions, pull, push
from registry.client.errors import ClientError
from tests.client.client_helpers import assert_same_image, make_image, random_layer
from tests.client.proxy import FailNth, Proxy

MiB = 1024 * 1024
# One job: requests come in a fixed order, so "the 2nd PATCH" is well defined. The registry is
# distribution (the reference): what is tested is the client's handling of each failure.
OPTS = dict(jobs=1, backoff=0.05, max_backoff=5.0, monolithic_max=MiB, chunk_size=MiB)


def _image(store, ref: str):
    return make_image(store, ref, [random_layer(store, 3 * MiB, 51), random_layer(store, 30_000, 52)])


@pytest.mark.parametrize("verb, method, part, nth, status, retry_after", [
    ("pull", "GET", "/manifests/", 1, 503, None),
    ("pull", "GET", "/blobs/sha256:", 2, 429, "1"),
    ("push", "HEAD", "/blobs/sha256:", 1, 503, None),
    ("push", "PUT", "/manifests/", 1, 503, None),
    ("push", "PATCH", "/blobs/uploads/", 2, 503, None),
    ("push", "PUT", "/blobs/uploads/", 1, 429, "1"),
    ("push", "POST", "/blobs/uploads/", 2, 503, None),
])
def test_a_failed_request_is_retried(distribution, store, store2, repo_name, verb, method, part, nth, status,
                                     retry_after):
    ref = f"{distribution.host}/{repo_name}:r"
    _image(store, ref)
    if verb == "pull":
        push(store, ref, None, ClientOptions(**OPTS))
    fail = FailNth(method, part, nth, status, retry_after)
    with Proxy(distribution.host, intercept=fail) as px:
        via = f"{px.host}/{repo_name}:r"
        t0 = time.monotonic()
        if verb == "pull":
            pull(store2, via, None, ClientOptions(**OPTS))
        else:
            push(store, ref, via, ClientOptions(**OPTS))
        took = time.monotonic() - t0
    assert len(fail.failed) == 1, fail.failed
    if retry_after:
        assert took >= float(retry_after), took  # Retry-After was honoured
    if verb == "push":  # what was pushed comes back whole
        pull(store2, ref, None, ClientOptions(**OPTS))
        via = ref
    assert_same_image(store, ref, store2, via)


@pytest.mark.parametrize("verb, method, part", [
    ("pull", "GET", "/manifests/"),
    ("pull", "GET", "/blobs/sha256:"),
    ("push", "PUT", "/manifests/"),
    ("push", "PATCH", "/blobs/uploads/"),
    ("push", "PUT", "/blobs/uploads/"),
])
def test_gives_up_after_the_configured_attempts(distribution, store, store2, repo_name, verb, method, part):
    ref = f"{distribution.host}/{repo_name}:g"
    _image(store, ref)
    if verb == "pull":
        push(store, ref, None, ClientOptions(**OPTS))
    fail = FailNth(method, part, 1, 503, times=1000)
    opts = ClientOptions(**{**OPTS, "retries": 2})
    with Proxy(distribution.host, intercept=fail) as px:
        with pytest.raises(ClientError) as ei:
            if verb == "pull":
                pull(store2, f"{px.host}/{repo_name}:g", None, opts)
            else:
                push(store, ref, f"{px.host}/{repo_name}:g", opts)
    msg = str(ei.value)
    assert "503" in msg and "\n" not in msg, msg
    assert len(fail.failed) == 3, fail.failed  # the first attempt and 2 retries, then no more
    if verb == "pull":
        assert store2.list() == []


@pytest.mark.parametrize("verb, method, part", [
    ("pull", "GET", "/manifests/"),
    ("push", "PUT", "/manifests/"),
    ("push", "POST", "/blobs/uploads/"),
])
def test_gives_up_on_dropped_connections_after_the_configured_attempts(distribution, store, store2, repo_name,
                                                                       verb, method, part):
    """A connection that closes with no answer is retried like a 503, and given up the same way."""
    ref = f"{distribution.host}/{repo_name}:d"
    _image(store, ref)
    if verb == "pull":
        push(store, ref, None, ClientOptions(**OPTS))
    fail = FailNth(method, part, 1, None, times=1000)
    opts = ClientOptions(**{**OPTS, "retries": 2})
    with Proxy(distribution.host, intercept=fail) as px:
        with pytest.raises(ClientError) as ei:
            if verb == "pull":
                pull(store2, f"{px.host}/{repo_name}:d", None, opts)
            else:
                push(store, ref, f"{px.host}/{repo_name}:d", opts)
    msg = str(ei.value)
    assert "3 attempts" in msg and "\n" not in msg, msg  # the first attempt and 2 retries, then no more
    # aiohttp itself resends an idempotent request once when a reused keep-alive connection turns
    # out closed, so each of soko's attempts reaches the proxy once or twice.
    assert 3 <= len(fail.failed) <= 6, fail.failed
