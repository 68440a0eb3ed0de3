"""Both transports behind the client's seam (registry/client/wire*.py): the stdlib one the CLI
uses and the aiohttp one the registry's proxy uses must keep the same promises: verified TLS
with a token, redirects without credentials, truncated and wrong bodies caught, nothing stored
after a failure. Each test runs once per transport, against real registries."""
from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import pytest

from registry.client import ClientOptions, copy, pull, push
from registry.client.credentials import Credentials
from registry.client.errors import ClientError, TLSFailure, UsageError, VerificationError
from registry.client.remote import Repository
from registry.client.session import RegistrySession
from tests.client.client_helpers import (TokenServer, assert_same_image, local_ip, make_image, make_tls,
                                         random_layer, start_distribution, start_soko_server)
from tests.client.proxy import BlobOrigin, Proxy, redirect_blobs
from tests.conftest import REPO

TRANSPORTS = ["stdlib", "aiohttp"]


def _opts(transport: str, **kw) -> ClientOptions:
    return ClientOptions(transport=transport, backoff=0.05, max_backoff=0.5, **kw)


def _image(store, ref: str):
    return make_image(store, ref, [random_layer(store, 400_000, 61), random_layer(store, 30_000, 62)])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_push_and_pull_over_verified_tls_with_a_token(tmp_path, store, store2, docker_config, transport):
    """A registry on a non-loopback address, TLS with its own CA, tokens from a token service:
    trusted through ca_file, refused without it."""
    ip = local_ip()
    ca, cert, key = make_tls(tmp_path / "pki", [ip])
    ts = TokenServer(tmp_path / "tokens", {"tester": "s3cret"}).__enter__()
    reg = start_distribution(tmp_path / "reg", ip=ip, tls=(cert, key),
                             token={"realm": ts.realm, "service": ts.service, "issuer": ts.issuer,
                                    "rootcertbundle": ts.bundle})
    try:
        auth = base64.b64encode(b"tester:s3cret").decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        ref = f"{reg.host}/team/wire:1"
        m = _image(store, ref)
        with pytest.raises(TLSFailure):
            push(store, ref, None, _opts(transport))
        push(store, ref, None, _opts(transport, ca_file=str(ca)))
        assert pull(store2, ref, None, _opts(transport, ca_file=str(ca))).digest == m.digest
        assert_same_image(store, ref, store2)
        scopes = [r["scopes"] for r in ts.requests if r["how"] == "get"]
        assert ["repository:team/wire:pull,push"] in scopes and ["repository:team/wire:pull"] in scopes
        assert all(r["user"] == "tester" for r in ts.requests)
    finally:
        reg.stop()
        ts.__exit__()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_redirected_blob_get_goes_without_credentials(auth_registry, store, repo_name, docker_config, transport):
    """Repository.open_blob (what copy streams from) follows a 307 to another origin, reads the
    right bytes there and hands that origin no Authorization header."""
    ref = f"{auth_registry.host}/{repo_name}:r"
    m = _image(store, ref)
    auth = base64.b64encode(b"tester:s3cret").decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    push(store, ref, None, _opts("stdlib"))
    layer = m.layers[0].digest
    blobs = {d.digest: store.blobs.read_bytes(d.digest) for d in [m.config, *m.layers]}

    async def fetch(host: str) -> bytes:
        async with RegistrySession(host, _opts(transport), Credentials("tester", "s3cret")) as sess:
            resp = await Repository(sess, repo_name).open_blob(layer)
            async with resp:
                assert resp.status == 200
                return b"".join([piece async for piece in resp.chunks()])

    with BlobOrigin(blobs) as cdn, Proxy(auth_registry.host, intercept=redirect_blobs(cdn.url)) as px:
        got = asyncio.run(fetch(px.host))
    assert got == blobs[layer]
    assert [q.path.split("?")[0] for q in cdn.requests] == [f"/cdn/{layer}"]
    assert all("authorization" not in q.headers for q in cdn.requests)
    assert any(q.headers.get("authorization", "").startswith("Basic ") for q in px.requests)


def _truncating(digest: str, body: bytes):
    """An intercept answering GETs of `digest` with its Content-Length but half its bytes."""
    def intercept(req):
        if req.method == "GET" and req.path.split("?")[0].endswith(f"/blobs/{digest}"):
            return (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
                    f"Docker-Content-Digest: {digest}\r\n\r\n").encode() + body[:len(body) // 2]
        return None
    return intercept


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_truncated_blob_body_is_never_taken_for_the_whole(distribution, store, repo_name, transport):
    ref = f"{distribution.host}/{repo_name}:t"
    m = _image(store, ref)
    push(store, ref, None, _opts("stdlib"))
    layer = m.layers[0].digest
    body = store.blobs.read_bytes(layer)
    got = bytearray()

    async def fetch(host: str) -> None:
        async with RegistrySession(host, _opts(transport)) as sess:
            resp = await Repository(sess, repo_name).open_blob(layer)
            async with resp:
                async for piece in resp.chunks():
                    got.extend(piece)

    with Proxy(distribution.host, intercept=_truncating(layer, body)) as px:
        with pytest.raises(ClientError) as ei:
            asyncio.run(fetch(px.host))
    assert 0 < len(got) <= len(body) // 2
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_copy_from_a_registry_sending_half_a_blob_fails_and_leaves_no_blob(distribution, store, repo_name,
                                                                              transport):
    ref = f"{distribution.host}/{repo_name}:h"
    m = _image(store, ref)
    push(store, ref, None, _opts("stdlib"))
    layer = m.layers[0].digest
    with Proxy(distribution.host, intercept=_truncating(layer, store.blobs.read_bytes(layer))) as px:
        with pytest.raises(ClientError) as ei:
            copy(f"docker://{px.host}/{repo_name}:h", f"docker://{distribution.host}/{repo_name}-dst:h",
                 _opts(transport, retries=1))
    assert "\n" not in str(ei.value)
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                          f"http://{distribution.host}/v2/{repo_name}-dst/blobs/{layer}"],
                         capture_output=True, text=True)
    assert out.stdout == "404"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_copy_of_wrong_bytes_is_refused(distribution, store, repo_name, transport):
    """The source registry's bytes are corrupted on the way: the copy fails verification and the
    destination never gets the blob (nor the manifest)."""
    ref = f"{distribution.host}/{repo_name}:w"
    m = _image(store, ref)
    push(store, ref, None, _opts("stdlib"))
    layer = m.layers[0]
    with Proxy(distribution.host, corrupt_at=layer.size // 2) as px:
        with pytest.raises(VerificationError) as ei:
            copy(f"docker://{px.host}/{repo_name}:w", f"docker://{distribution.host}/{repo_name}-dst:w",
                 _opts(transport, jobs=1))
    assert px.corrupted and "\n" not in str(ei.value)
    for path in (f"blobs/{layer.digest}", "manifests/w"):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                              f"http://{distribution.host}/v2/{repo_name}-dst/{path}"], capture_output=True, text=True)
        assert out.stdout == "404", path


def test_the_stdlib_transport_keeps_its_connection(distribution, store, repo_name):
    """Ping, manifest and HEADs one after another go over one kept connection."""
    ref = f"{distribution.host}/{repo_name}:k"
    m = _image(store, ref)
    push(store, ref, None, _opts("stdlib"))

    async def look(host: str) -> None:
        async with RegistrySession(host, _opts("stdlib")) as sess:
            repo = Repository(sess, repo_name)
            assert (await repo.get_manifest("k")).digest == m.digest
            for d in m.layers:
                assert await repo.blob_size(d.digest) == d.size

    with Proxy(distribution.host) as px:
        asyncio.run(look(px.host))
    assert px.connections == 1


def test_a_pull_over_tls_fetches_every_blob_over_the_sessions_connection(tmp_path, store, store2):
    """Against a real `soko serve` speaking TLS on loopback, a pull of a config and three layers,
    one blob at a time, makes one TLS connection: the blob GETs take the session's kept
    connection and its TLS context, where each blob used to open (and handshake) its own."""
    ca, cert, key = make_tls(tmp_path / "pki", ["127.0.0.1"])
    reg = start_soko_server(tmp_path / "reg", tls=(cert, key))
    try:
        ref = f"{reg.host}/team/reuse:1"
        m = make_image(store, ref, [random_layer(store, 300_000, 71), random_layer(store, 200_000, 72),
                                    random_layer(store, 100_000, 73)])
        push(store, ref, None, _opts("stdlib"))
        with Proxy(reg.host) as px:
            got = pull(store2, f"{px.host}/team/reuse:1", None, _opts("stdlib", jobs=1))
        assert got.digest == m.digest and len(got.downloaded) == 4
        assert_same_image(store, ref, store2, f"{px.host}/team/reuse:1")
        # loopback tries plain HTTP first (one connection, refused by the TLS port), then one for all the rest
        assert px.connections == 2
    finally:
        reg.stop()


def test_the_clients_pull_and_push_import_no_aiohttp():
    """aiohttp costs a pull or push ~0.13-0.16 s before its first byte; the CLI's client never
    needs it (the registry server's proxy imports wire_aio itself)."""
    code = ("import sys, registry.client, registry.client.pulling, registry.client.pushing, registry.client.copying; "
            "print('aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_an_unknown_transport_is_a_usage_error():
    async def enter() -> None:
        async with RegistrySession("127.0.0.1:1", ClientOptions(transport="carrier-pigeon")):
            pass

    with pytest.raises(UsageError, match="carrier-pigeon"):
        asyncio.run(enter())
