"""Basic auth with htpasswd, read-only mode, pull-only users, TLS and limits."""
from __future__ import annotations

import base64
import ssl
import subprocess

import pytest

from registry.errors import ConfigError

from .conftest import Client, sha256, unique


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    for i, (user, pw) in enumerate([("alice", "s3cret"), ("bob", "pullonly")]):
        subprocess.run(["htpasswd", "-bB" + ("c" if i == 0 else ""), str(path), user, pw], check=True,
                       capture_output=True)
    assert path.read_text().startswith("alice:$2y$")
    return path


def test_basic_auth(fresh_server, htpasswd, tmp_path):
    srv = fresh_server.configure({"readers": ["bob"], "realm": "test-realm"})
    srv.args = ["--htpasswd", str(htpasswd), *srv.args]
    srv.start()
    anon = srv.client()
    r = anon.request("GET", "/v2/")
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"]
    assert r.header("WWW-Authenticate") == 'Basic realm="test-realm"'
    for bad in (basic("alice", "wrong"), basic("mallory", "s3cret"), "Basic !!notbase64", "Bearer abc"):
        r = anon.request("GET", "/v2/", headers={"Authorization": bad})
        assert r.status == 401 and r.codes == ["UNAUTHORIZED"], bad
    r = anon.request("POST", f"/v2/{unique()}/blobs/uploads/")
    assert r.status == 401

    alice = srv.client(auth=basic("alice", "s3cret"))
    assert alice.request("GET", "/v2/").status == 200
    name = unique()
    digest, raw = alice.push_image(name, "v1")
    assert alice.request("GET", f"/v2/{name}/manifests/v1").body == raw  # cached credentials path

    bob = srv.client(auth=basic("bob", "pullonly"))
    assert bob.request("GET", f"/v2/{name}/manifests/v1").body == raw
    r = bob.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 403 and r.codes == ["DENIED"]
    r = bob.request("DELETE", f"/v2/{name}/manifests/v1")
    assert r.status == 403 and r.codes == ["DENIED"]
    for c in (anon, alice, bob):
        c.close()


def test_htpasswd_must_be_bcrypt(tmp_path):
    from registry.server.passwords import load_htpasswd

    path = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-bcm", str(path), "u", "p"], check=True, capture_output=True)  # apr1 MD5
    with pytest.raises(ConfigError, match="bcrypt"):
        load_htpasswd(path)
    path.write_text("no colon here\n")
    with pytest.raises(ConfigError, match="user:hash"):
        load_htpasswd(path)


def test_read_only(fresh_server, tmp_path):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    digest, raw = c.push_image(name, "v1")
    c.close()
    srv.stop()
    srv.args = ["--read-only"]
    srv.start()
    c = srv.client()
    assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
    assert c.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["v1"]
    for method, path in [("POST", f"/v2/{name}/blobs/uploads/"), ("PUT", f"/v2/{name}/manifests/v2"),
                         ("DELETE", f"/v2/{name}/manifests/v1"), ("DELETE", f"/v2/{name}/blobs/{digest}")]:
        r = c.request(method, path, body=raw if method == "PUT" else None)
        assert r.status == 405 and r.codes == ["UNSUPPORTED"], (method, path)
    assert c.request("GET", f"/v2/{name}/manifests/v1").status == 200
    c.close()


def test_self_signed_tls(fresh_server):
    srv = fresh_server
    srv.args = ["--tls-self-signed"]
    srv.start()
    assert srv.url.startswith("https://")
    cert = srv.root / "tls" / "self-signed.crt"
    ctx = ssl.create_default_context(cafile=str(cert))
    c = Client("127.0.0.1", srv.port, tls=ctx)
    assert c.request("GET", "/v2/").status == 200
    name = unique()
    digest = c.push_blob(name, b"over tls")
    assert c.request("GET", f"/v2/{name}/blobs/{digest}").body == b"over tls"
    c.close()
    # the same certificate after a restart
    before = cert.read_bytes()
    srv.restart()
    assert cert.read_bytes() == before
    # an untrusting client refuses it
    with pytest.raises(ssl.SSLCertVerificationError):
        Client("127.0.0.1", srv.port, tls=ssl.create_default_context()).request("GET", "/v2/")


def test_tls_with_given_cert(fresh_server, tmp_path):
    from registry.server.tls import self_signed

    cert, key = self_signed(tmp_path / "made", "127.0.0.1")
    srv = fresh_server
    srv.args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    srv.start()
    c = Client("127.0.0.1", srv.port, tls=ssl.create_default_context(cafile=str(cert)))
    assert c.request("GET", "/v2/").status == 200
    c.close()


def test_too_many_uploads(fresh_server, tmp_path):
    import socket
    import time

    srv = fresh_server.configure({"limits": {"max_concurrent_uploads": 1}}).start()
    c = srv.client()
    name = unique()
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 10)
    upload_file = srv.root / "ingest" / f"upload-{loc.rsplit('/', 1)[1]}"
    deadline = time.time() + 15
    while not upload_file.exists() and time.time() < deadline:  # the PATCH holds its slot
        time.sleep(0.02)
    r = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(b'y')}", body=b"y")
    assert r.status == 429 and r.codes == ["TOOMANYREQUESTS"]
    s.sendall(b"x" * 990)
    s.recv(1000)
    s.close()
    r = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(b'y')}", body=b"y")
    assert r.status == 201
    c.close()


def test_blob_size_limit(fresh_server, tmp_path):
    srv = fresh_server.configure({"limits": {"max_blob_bytes": 1000}}).start()
    c = srv.client()
    name = unique()
    r = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(b'z' * 1001)}", body=b"z" * 1001)
    assert r.status == 413 and r.codes == ["SIZE_INVALID"]
    assert c.request("HEAD", f"/v2/{name}/blobs/{sha256(b'z' * 1001)}").status == 404
    assert c.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(b'z' * 1000)}", body=b"z" * 1000
                     ).status == 201
    c.close()


def test_bad_flags_exit_cleanly(tmp_path):
    import sys

    from .conftest import REPO

    p = subprocess.run([sys.executable, "-m", "registry.server", "--addr", "nope", "--root", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["error: addr (from the command line): invalid address 'nope' (want HOST:PORT)"]
