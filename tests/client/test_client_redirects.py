"""Blob GETs answered with a 307 to another origin (a CDN, a presigned S3 URL):
followed, verified, and never given the registry's credentials or token."""
from __future__ import annotations

import base64
import json

import pytest

from registry.client import ClientOptions, copy, pull, push
from registry.client.errors import VerificationError
from tests.client.client_helpers import assert_same_image, make_image, random_layer, start_token_registry
from tests.client.proxy import BlobOrigin, Proxy, redirect_blobs

FAST = ClientOptions(backoff=0.05, max_backoff=1.0)


def _auths(docker_config, *hosts: str, user: str = "tester", password: str = "s3cret") -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {h: {"auth": auth} for h in hosts}}))


def _blobs_of(store, m) -> dict[str, bytes]:
    return {d.digest: store.blobs.read_bytes(d.digest) for d in [m.config, *m.layers]}


def _no_secrets_went_to(origin: BlobOrigin, *secrets: str) -> None:
    assert origin.requests, "nothing was fetched from the other origin"
    for req in origin.requests:
        assert "authorization" not in req.headers, req
        sent = req.path + "".join(f"{k}: {v}" for k, v in req.headers.items())
        for secret in secrets:
            assert secret not in sent, (secret, req)


def _image(store, ref: str):
    return make_image(store, ref, [random_layer(store, 300_000, 41), random_layer(store, 20_000, 42)])


def test_a_pull_follows_a_redirect_to_another_origin_without_credentials(auth_registry, store, store2,
                                                                          repo_name, docker_config):
    ref = f"{auth_registry.host}/{repo_name}:r"
    m = _image(store, ref)
    with BlobOrigin(_blobs_of(store, m)) as cdn, Proxy(auth_registry.host, intercept=redirect_blobs(cdn.url)) as px:
        _auths(docker_config, auth_registry.host, px.host)
        push(store, ref, None, FAST)
        r = pull(store2, f"{px.host}/{repo_name}:r", None, FAST)
        assert r.digest == m.digest
        assert_same_image(store, ref, store2, f"{px.host}/{repo_name}:r")
        blob_gets = [q for q in px.requests if q.method == "GET" and "/blobs/" in q.path]
        assert len(blob_gets) == 3 and all(q.headers.get("authorization", "").startswith("Basic ")
                                           for q in blob_gets)  # the registry itself got the credentials
        assert {q.path.split("?")[0].rsplit("/", 1)[1] for q in cdn.requests} == {d.digest for d in
                                                                                 [m.config, *m.layers]}
        _no_secrets_went_to(cdn, "s3cret", base64.b64encode(b"tester:s3cret").decode())


def test_a_redirect_to_wrong_bytes_fails_and_stores_nothing(registry, store, store2, repo_name):
    ref = f"{registry.host}/{repo_name}:w"
    m = _image(store, ref)
    push(store, ref, None, FAST)
    served = _blobs_of(store, m)
    layer = m.layers[0].digest
    bad = bytearray(served[layer])
    bad[len(bad) // 2] ^= 0xFF
    served[layer] = bytes(bad)
    with BlobOrigin(served) as cdn, Proxy(registry.host, intercept=redirect_blobs(cdn.url)) as px:
        with pytest.raises(VerificationError) as ei:
            pull(store2, f"{px.host}/{repo_name}:w", None, FAST)
    assert layer in str(ei.value) and "\n" not in str(ei.value)
    assert not store2.blobs.has(layer)
    assert not [p for p, _ in store2.blobs.ingest_entries() if layer[7:] in p.name]
    assert store2.list() == []


def test_a_bearer_token_stays_with_its_registry(tmp_path, store, store2, docker_config):
    """Token auth (distribution + a token service): pull and registry-to-registry copy
    both follow the redirect; the CDN sees neither the token nor the password."""
    ts, reg = start_token_registry(tmp_path / "tok")
    try:
        ref = f"{reg.host}/team/app:1"
        m = _image(store, ref)
        with BlobOrigin(_blobs_of(store, m)) as cdn, Proxy(reg.host, intercept=redirect_blobs(cdn.url)) as px:
            _auths(docker_config, reg.host, px.host)
            push(store, ref, None, FAST)
            pull(store2, f"{px.host}/team/app:1", None, FAST)
            assert_same_image(store, ref, store2, f"{px.host}/team/app:1")
            copy(f"docker://{px.host}/team/app:1", f"docker://{reg.host}/team/copy:1", FAST)
            bearer = [q.headers["authorization"] for q in px.requests
                      if q.headers.get("authorization", "").startswith("Bearer ")]
            assert bearer, "the registry got no token: the check below would prove nothing"
            assert len({q.path for q in cdn.requests}) == 3 and len(cdn.requests) >= 6  # pull and copy
            _no_secrets_went_to(cdn, "s3cret", *{b.split(" ", 1)[1] for b in bearer})
        pull(store2, f"{reg.host}/team/copy:1", None, FAST)
        assert_same_image(store, ref, store2, f"{reg.host}/team/copy:1")
    finally:
        reg.stop()
        ts.__exit__()
