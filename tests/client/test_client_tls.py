"""Scheme and TLS rules: verified HTTPS by default, loopback plain HTTP, --insecure, a CA file."""
from __future__ import annotations

import shutil

import pytest

from registry.client import ClientOptions, pull, push
from registry.client.errors import TLSFailure, Unreachable
from registry.client.session import CERTS_D
from tests.client.client_helpers import (assert_same_image, busybox_layer, local_ip, make_image, make_tls,
                                         random_layer, start_distribution)
from tests.conftest import need_root

FAST = dict(backoff=0.05)


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ip = local_ip()
    ca, cert, key = make_tls(root / "pki", [ip, "127.0.0.1"])
    remote = start_distribution(root / "remote", ip=ip, tls=(cert, key))
    loop = start_distribution(root / "loop", tls=(cert, key))
    plain = start_distribution(root / "plain", ip=ip)
    yield ca, remote, loop, plain
    for r in (remote, loop, plain):
        r.stop()


def test_unknown_ca_fails_with_a_way_out(tls_setup, store):
    ca, remote, _, _ = tls_setup
    ref = f"{remote.host}/tls/a:1"
    make_image(store, ref, [busybox_layer(store)])
    with pytest.raises(TLSFailure) as ei:
        push(store, ref, None, ClientOptions(**FAST))
    msg = str(ei.value)
    assert "\n" not in msg and "--insecure" in msg and "CA file" in msg and remote.host in msg
    assert f"/etc/docker/certs.d/{remote.host}/ca.crt" in msg  # what `soko push/pull` users can do
    assert "--ca-file" not in msg  # soko push/pull have no such flag


def test_docker_certs_d_ca_makes_it_trusted(tls_setup, store, store2):
    """The way the TLS error names: Docker's /etc/docker/certs.d/HOST:PORT/ca.crt."""
    need_root()
    ca, remote, _, _ = tls_setup
    ref = f"{remote.host}/tls/certsd:1"
    m = make_image(store, ref, [busybox_layer(store)])
    made = [p for p in (CERTS_D.parent, CERTS_D) if not p.exists()]  # removed again afterwards
    d = CERTS_D / remote.host  # a fresh port: no one else's directory
    d.mkdir(parents=True)
    try:
        shutil.copy(ca, d / "ca.crt")
        push(store, ref, None, ClientOptions(**FAST))
        assert pull(store2, ref, None, ClientOptions(**FAST)).digest == m.digest
        assert_same_image(store, ref, store2)
    finally:
        shutil.rmtree(d)
        for p in reversed(made):
            p.rmdir()


def test_ca_file_makes_it_trusted(tls_setup, store, store2):
    ca, remote, _, _ = tls_setup
    ref = f"{remote.host}/tls/b:1"
    m = make_image(store, ref, [busybox_layer(store)])
    push(store, ref, None, ClientOptions(ca_file=str(ca), **FAST))
    assert pull(store2, ref, None, ClientOptions(ca_file=str(ca), **FAST)).digest == m.digest
    assert_same_image(store, ref, store2)


def _pulls_back_the_same(store, store2, ref: str, opts: ClientOptions) -> None:
    """The image went up and comes back byte for byte (over the same scheme rules)."""
    pull(store2, ref, None, opts)
    assert_same_image(store, ref, store2)


def test_insecure_skips_verification(tls_setup, store, store2):
    _, remote, _, _ = tls_setup
    ref = f"{remote.host}/tls/c:1"
    make_image(store, ref, [busybox_layer(store), random_layer(store, 100_000, 61)])
    push(store, ref, None, ClientOptions(insecure=True, **FAST))
    _pulls_back_the_same(store, store2, ref, ClientOptions(insecure=True, **FAST))


def test_loopback_tls_registry_works_without_flags(tls_setup, store, store2):
    """Loopback tries plain HTTP first; a TLS port answers 400 to that, so HTTPS (unverified) follows."""
    _, _, loop, _ = tls_setup
    ref = f"{loop.host}/tls/d:1"
    make_image(store, ref, [busybox_layer(store), random_layer(store, 100_000, 62)])
    push(store, ref, None, ClientOptions(**FAST))
    _pulls_back_the_same(store, store2, ref, ClientOptions(**FAST))


def test_plain_http_needs_insecure_off_loopback(tls_setup, store, store2):
    _, _, _, plain = tls_setup
    ref = f"{plain.host}/tls/e:1"
    make_image(store, ref, [busybox_layer(store), random_layer(store, 100_000, 63)])
    with pytest.raises((TLSFailure, Unreachable)) as ei:
        push(store, ref, None, ClientOptions(**FAST))
    assert "--insecure" in str(ei.value) and "\n" not in str(ei.value)
    push(store, ref, None, ClientOptions(insecure=True, **FAST))
    _pulls_back_the_same(store, store2, ref, ClientOptions(insecure=True, **FAST))


def test_importing_the_client_parses_no_ca_bundle():
    """aiohttp's own default context (which the client never uses) is made without the system's
    CA bundle, ~50 ms of every push and pull; it trusts nothing, so it could never verify."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import registry.client.wire_aio, aiohttp.connector as c, ssl; "
            "v, u = c._SSL_CONTEXT_VERIFIED, c._SSL_CONTEXT_UNVERIFIED; "
            "print(v.cert_store_stats()['x509_ca'], v.verify_mode == ssl.CERT_REQUIRED, v.check_hostname, "
            "u.cert_store_stats()['x509_ca'], u.verify_mode == ssl.CERT_NONE, "
            "ssl.create_default_context().cert_store_stats()['x509_ca'] > 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "True", "True", "0", "True", "True"]
