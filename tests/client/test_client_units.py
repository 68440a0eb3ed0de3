"""Small pure pieces: challenges, Retry-After, loopback rules, credential keys."""
from __future__ import annotations

import time
from email.utils import formatdate

from registry.client.auth import parse_challenges, pick_challenge, scope_for
from registry.client.credentials import normalize_host, server_key
from registry.client.logins import registry_host
from registry.client.session import api_host, is_loopback, retry_after, retryable_status


def test_challenges():
    c = pick_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                       'scope="repository:library/busybox:pull"')
    assert c.scheme == "bearer" and c.realm == "https://auth.docker.io/token"
    assert c.params["scope"] == "repository:library/busybox:pull"
    both = parse_challenges('Basic realm="r1", Bearer realm="http://t/token",service="s",error="insufficient_scope"')
    assert [x.scheme for x in both] == ["basic", "bearer"]
    assert both[1].params == {"realm": "http://t/token", "service": "s", "error": "insufficient_scope"}
    assert pick_challenge('Basic realm="x"').scheme == "basic"
    assert pick_challenge('Negotiate abc') is None
    assert pick_challenge('Bearer realm="a \\"q\\" b"').realm == 'a "q" b'
    assert scope_for("team/app", ["push", "pull", "pull"]) == "repository:team/app:pull,push"


def test_retry_after_and_statuses():
    class H(dict):
        pass
    assert retry_after(H({"Retry-After": "3"})) == 3.0
    future = formatdate(time.time() + 5, usegmt=True)
    assert 3.0 <= retry_after(H({"Retry-After": future})) <= 6.0
    assert retry_after(H({"Retry-After": "soon"})) is None and retry_after(H()) is None
    assert all(retryable_status(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(retryable_status(s) for s in (400, 401, 403, 404, 416, 501, 505))


def test_loopback_and_hub_hosts():
    for h in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.3.4.5", "[::1]:5000"):
        assert is_loopback(h), h
    for h in ("registry.example.com", "10.0.0.1:5000", "localhost.example.com:5000"):
        assert not is_loopback(h), h
    assert api_host("docker.io") == "registry-1.docker.io" and api_host("ghcr.io") == "ghcr.io"


def test_credential_keys():
    assert server_key("docker.io") == "https://index.docker.io/v1/"
    assert server_key("localhost:5000") == "localhost:5000"
    assert normalize_host("https://Registry.Example.com:5000/v1/") == "registry.example.com:5000"
    assert registry_host("https://index.docker.io/v1/") == "docker.io"
    assert registry_host("localhost:5000") == "localhost:5000"


def test_the_client_functions_stay_functions_once_their_modules_are_imported():
    """An embedder calling registry.client.pull twice, or importing it after a push, gets the
    function: the modules behind push, pull, copy, login and search have names of their own
    (importing a submodule named `pull` made registry.client.pull that module)."""
    import importlib

    import registry.client as client

    for module in ("pushing", "pulling", "copying", "logins", "searching"):
        importlib.import_module(f"registry.client.{module}")
    for name in ("push", "pull", "copy", "login", "logout", "search"):
        assert callable(getattr(client, name)) and getattr(client, name).__module__ == "registry.client", name
