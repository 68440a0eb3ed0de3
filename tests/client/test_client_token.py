"""Bearer tokens (the Docker token spec) against distribution configured with `auth: token`."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

from registry.client import ClientOptions, login, pull, push
from registry.client.credentials import Credentials
from registry.client.errors import AuthenticationRequired
from registry.client.remote import Repository
from registry.client.session import RegistrySession
from tests.client.client_helpers import busybox_layer, make_image, random_layer, start_token_registry

FAST = ClientOptions(backoff=0.05)


@pytest.fixture
def token_registry(tmp_path):
    ts, reg = start_token_registry(tmp_path)
    yield ts, reg
    reg.stop()
    ts.__exit__()


def _auths(docker_config, host, user="tester", password="s3cret"):
    (docker_config / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))


def test_push_and_pull_with_tokens_cached_per_scope(token_registry, store, store2, docker_config):
    ts, reg = token_registry
    _auths(docker_config, reg.host)
    ref = f"{reg.host}/team/app:1"
    m = make_image(store, ref, [busybox_layer(store), random_layer(store, 200_000, 21),
                                random_layer(store, 100_000, 22)])
    push(store, ref, None, FAST)
    issued = [r for r in ts.requests if r["how"] == "get"]
    # four blobs and a manifest in parallel, one token for them all
    assert [r["scopes"] for r in issued] == [["repository:team/app:pull,push"]]
    assert issued[0]["user"] == "tester"
    assert pull(store2, ref, None, FAST).digest == m.digest
    assert [r["scopes"] for r in ts.requests[1:]] == [["repository:team/app:pull"]]


def test_anonymous_token_for_public_pull_and_401_for_push(token_registry, store, store2, docker_config):
    ts, reg = token_registry
    ref = f"{reg.host}/public/base:1"
    _auths(docker_config, reg.host)
    m = make_image(store, ref, [busybox_layer(store)])
    push(store, ref, None, FAST)
    (docker_config / "config.json").unlink()
    assert pull(store2, ref, None, FAST).digest == m.digest  # anonymous token, pull only
    assert ts.requests[-1]["user"] is None
    with pytest.raises(AuthenticationRequired) as ei:
        push(store, ref, f"{reg.host}/public/base:2", FAST)
    assert "\n" not in str(ei.value) and f"soko login {reg.host}" in str(ei.value)


def test_wrong_password_at_the_token_service(token_registry, store, docker_config):
    ts, reg = token_registry
    _auths(docker_config, reg.host, password="nope")
    ref = f"{reg.host}/team/app:1"
    make_image(store, ref, [busybox_layer(store)])
    with pytest.raises(AuthenticationRequired) as ei:
        push(store, ref, None, FAST)
    assert "refused" in str(ei.value) and "\n" not in str(ei.value)


def test_cross_repository_mount_asks_for_both_scopes(token_registry, store, docker_config):
    ts, reg = token_registry
    _auths(docker_config, reg.host)
    layers = [busybox_layer(store)]
    make_image(store, f"{reg.host}/team/base:1", layers)
    push(store, f"{reg.host}/team/base:1", None, FAST)
    make_image(store, f"{reg.host}/team/app:1", layers, cmd=["/bin/ls"])
    r = push(store, f"{reg.host}/team/app:1", None, FAST)
    assert r.mounted == [layers[0][0].digest]
    assert sorted(["repository:team/app:pull,push", "repository:team/base:pull"]) in \
        [sorted(x["scopes"]) for x in ts.requests]


async def test_tokens_are_renewed_when_they_expire(tmp_path):
    ts, reg = start_token_registry(tmp_path, expires_in=2)
    try:
        async with RegistrySession(reg.host, FAST, Credentials("tester", "s3cret")) as sess:
            repo = Repository(sess, "team/x")
            assert await repo.manifest_exists("nope") is None
            assert await repo.manifest_exists("nope") is None
            assert len(ts.requests) == 1  # cached
            await asyncio.sleep(2.2)
            assert await repo.manifest_exists("nope") is None
            assert len(ts.requests) == 2  # renewed before use, not after a refusal
    finally:
        reg.stop()
        ts.__exit__()


async def test_a_token_the_registry_refuses_is_fetched_again(tmp_path):
    """The token service says 300 s, the registry stops honouring it after 2 s: the 401 brings a new one.
    (distribution allows 60 s of leeway past `exp`, hence the negative lifetime.)"""
    ts, reg = start_token_registry(tmp_path, expires_in=300, jwt_lifetime=-58)
    try:
        async with RegistrySession(reg.host, FAST, Credentials("tester", "s3cret")) as sess:
            repo = Repository(sess, "team/x")
            assert await repo.manifest_exists("nope") is None
            await asyncio.sleep(3.1)
            assert await repo.manifest_exists("nope") is None
            assert len(ts.requests) == 2
    finally:
        reg.stop()
        ts.__exit__()


def test_login_stores_the_identity_token_and_uses_it(token_registry, store, docker_config):
    ts, reg = token_registry
    with pytest.raises(AuthenticationRequired):
        login(reg.host, "tester", "wrong", FAST)
    assert not (docker_config / "config.json").exists()
    login(reg.host, "tester", "s3cret", FAST)
    entry = json.loads((docker_config / "config.json").read_text())["auths"][reg.host]
    assert entry["identitytoken"] in ts.refresh_tokens
    assert "s3cret" not in base64.b64decode(entry["auth"]).decode()
    ref = f"{reg.host}/team/idt:1"
    make_image(store, ref, [busybox_layer(store)])
    push(store, ref, None, FAST)
    assert ts.requests[-1]["how"] == "refresh" and ts.requests[-1]["user"] == "tester"
