"""The pull-through cache against a real upstream: CNCF distribution 2.8 with
htpasswd auth (and soko itself with token auth), pulled through soko with
skopeo, `soko pull` and plain HTTP; each blob fetched upstream once for
concurrent pulls; the cache keeps serving when the upstream is gone; a tag
changed upstream is seen after the ttl, not before."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.client.client_helpers import start_distribution
from tests.interop.tools import need_tool, run

from .conftest import RegistryProc
from .layouts import write_image
from .teams import PASSWORDS, Tokens, team_config

pytestmark = pytest.mark.interop
UP_USER, UP_PASSWORD = "upstream", "upstream-pw"
SKOPEO = ["skopeo", "--insecure-policy"]


def image_layout(dest: Path, layer_size: int = 64 * 1024) -> dict:
    """An OCI layout with one image whose layer is `layer_size` random (incompressible) bytes."""
    return write_image(dest, os.urandom(layer_size), {"seed": os.urandom(8).hex()}, level=1)


def push_upstream(upstream, layout: Path, ref: str, creds: str = f"{UP_USER}:{UP_PASSWORD}") -> None:
    run(*SKOPEO, "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:latest",
        f"docker://{upstream.host}/{ref}")


def blob_gets(upstream, digest: str) -> int:
    """GETs of a blob in distribution's access log."""
    log = (upstream.root / "registry.log").read_text(errors="replace")
    return len(re.findall(rf'"GET /v2/[^ ]+/blobs/{re.escape(digest)} HTTP', log))


@pytest.fixture
def upstream(tmp_path):
    need_tool("docker-registry")
    need_tool("skopeo")
    reg = start_distribution(tmp_path / "upstream", htpasswd=(UP_USER, UP_PASSWORD), access_log=True)
    yield reg
    reg.stop()


def proxy_server(root: Path, config: dict) -> RegistryProc:
    return RegistryProc(root).configure(config).start()


def proxy_config(upstream, **kw) -> dict:
    return {"proxy": {"remoteurl": f"http://{upstream.host}", "username": UP_USER, "password": UP_PASSWORD, **kw}}


@pytest.fixture
def stopping():
    servers: list[RegistryProc] = []
    yield servers.append
    for s in servers:
        s.stop()
        assert "Traceback" not in s.errors(), s.errors()


def test_pull_through_with_skopeo_and_soko(upstream, tmp_path, soko, stopping):
    img = image_layout(tmp_path / "img")
    push_upstream(upstream, tmp_path / "img", "library/app:1")
    srv = proxy_server(tmp_path / "proxy", proxy_config(upstream))
    stopping(srv)
    host = f"127.0.0.1:{srv.port}"
    out = tmp_path / "out"
    run(*SKOPEO, "copy", "--src-tls-verify=false", f"docker://{host}/library/app:1", f"oci:{out}:x")
    assert (out / "blobs" / "sha256" / img["layer"].split(":")[1]).read_bytes() == img["layer_bytes"]
    info = json.loads(run(*SKOPEO, "inspect", "--tls-verify=false", f"docker://{host}/library/app:1"))
    assert info["Digest"] == img["manifest"]
    soko("pull", f"{host}/library/app:1")
    images = soko("images", "--digests").stdout
    assert "library/app" in images and img["manifest"] in images
    # cached: listed, read-only
    c = srv.client()
    assert c.request("GET", "/v2/library/app/tags/list").json()["tags"] == ["1"]
    r = c.request("POST", "/v2/library/app/blobs/uploads/")
    assert r.status == 405 and r.codes == ["UNSUPPORTED"] and "pull-through cache" in r.json()["errors"][0]["message"]
    assert c.request("DELETE", f"/v2/library/app/manifests/{img['manifest']}").status == 405
    with pytest.raises(AssertionError, match="(?i)unsupported|405|not allowed"):
        run(*SKOPEO, "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'img'}:latest",
            f"docker://{host}/library/app:2")
    # what upstream does not have is a 404 here
    r = c.request("GET", "/v2/library/app/manifests/nope")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    r = c.request("GET", "/v2/library/app/blobs/sha256:" + "0" * 64)
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]


def test_concurrent_pulls_fetch_each_blob_once(upstream, tmp_path, stopping):
    img = image_layout(tmp_path / "img", layer_size=24 * 1024 * 1024)
    push_upstream(upstream, tmp_path / "img", "team/big:1")
    srv = proxy_server(tmp_path / "proxy", proxy_config(upstream))
    stopping(srv)
    host = f"127.0.0.1:{srv.port}"
    assert blob_gets(upstream, img["layer"]) == 0
    # five plain clients at once: the layer's bytes stream to all of them from one upstream GET
    barrier = threading.Barrier(5)
    bodies: list[bytes] = []

    def get() -> None:
        c = srv.client()
        barrier.wait()
        r = c.request("GET", f"/v2/team/big/blobs/{img['layer']}")
        assert r.status == 200, r.body[:200]
        bodies.append(r.body)

    threads = [threading.Thread(target=get) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(bodies) == 5 and all(b == img["layer_bytes"] for b in bodies)
    assert blob_gets(upstream, img["layer"]) == 1
    # five skopeo pulls at once: every blob (config too) fetched upstream once
    outs = [tmp_path / f"out{i}" for i in range(5)]
    errors: list[BaseException] = []

    def pull(out: Path) -> None:
        try:
            run(*SKOPEO, "copy", "--src-tls-verify=false", f"docker://{host}/team/big:1", f"oci:{out}:x")
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=pull, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for o in outs:
        assert hashlib.sha256((o / "blobs" / "sha256" / img["layer"][7:]).read_bytes()).hexdigest() == img["layer"][7:]
    assert blob_gets(upstream, img["layer"]) == 1
    assert blob_gets(upstream, img["config"]) == 1


def test_the_cache_serves_when_the_upstream_is_gone(upstream, tmp_path, soko, stopping):
    img = image_layout(tmp_path / "img")
    push_upstream(upstream, tmp_path / "img", "library/app:1")
    push_upstream(upstream, tmp_path / "img", "library/app:never-pulled")
    srv = proxy_server(tmp_path / "proxy", proxy_config(upstream, ttl=0))
    stopping(srv)
    host = f"127.0.0.1:{srv.port}"
    run(*SKOPEO, "copy", "--src-tls-verify=false", f"docker://{host}/library/app:1", f"oci:{tmp_path / 'a'}:x")
    upstream.stop()
    run(*SKOPEO, "copy", "--src-tls-verify=false", f"docker://{host}/library/app:1", f"oci:{tmp_path / 'b'}:x")
    soko("pull", f"{host}/library/app:1")
    c = srv.client()
    r = c.request("GET", "/v2/library/app/manifests/never-pulled")
    assert r.status == 502, r.body
    message = r.json()["errors"][0]["message"]
    assert "not cached" in message and upstream.host in message and "never-pulled" in message
    r = c.request("GET", "/v2/library/other/blobs/" + img["layer"])  # cached, but never for this repository
    assert r.status == 502 and "not cached" in r.json()["errors"][0]["message"]


def test_a_tag_changed_upstream_is_seen_after_ttl_not_before(upstream, tmp_path, stopping):
    one, two = image_layout(tmp_path / "one"), image_layout(tmp_path / "two")
    push_upstream(upstream, tmp_path / "one", "library/app:moving")
    ttl = 3.0
    srv = proxy_server(tmp_path / "proxy", proxy_config(upstream, ttl=ttl))
    stopping(srv)
    c = srv.client()
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

    def served() -> str:
        r = c.request("GET", "/v2/library/app/manifests/moving", headers=accept)
        assert r.status == 200, r.body
        return r.header("Docker-Content-Digest")

    assert served() == one["manifest"]
    checked = time.monotonic()
    push_upstream(upstream, tmp_path / "two", "library/app:moving")
    assert served() == one["manifest"]  # younger than ttl: not asked upstream
    time.sleep(max(0.0, checked + ttl + 0.5 - time.monotonic()))
    assert served() == two["manifest"]
    r = c.request("GET", f"/v2/library/app/manifests/{one['manifest']}", headers=accept)
    assert r.status == 200  # the old one stays cached by digest


def test_namespaced_upstreams_with_basic_and_token_auth(upstream, tmp_path, fresh_server, stopping):
    """hub/* comes from distribution (htpasswd), soko/* from a soko registry with token auth; other
    repositories are this registry's own."""
    token_up = fresh_server.configure(team_config(token={"basic": False})).start()  # tokens only
    alice = Tokens(token_up).client("alice", ["repository:team/app:pull,push"])
    team_digest, _ = alice.push_image("team/app", "1")
    img = image_layout(tmp_path / "img")
    push_upstream(upstream, tmp_path / "img", "library/app:1")
    srv = proxy_server(tmp_path / "proxy", {"proxy": {"upstreams": [
        {"namespace": "hub", "remoteurl": f"http://{upstream.host}", "username": UP_USER, "password": UP_PASSWORD},
        {"namespace": "soko", "remoteurl": f"http://127.0.0.1:{token_up.port}", "username": "alice",
         "password": PASSWORDS["alice"]},
        {"namespace": "wrong", "remoteurl": f"http://{upstream.host}", "username": UP_USER, "password": "nope"},
    ]}})
    stopping(srv)
    c = srv.client()
    r = c.request("GET", "/v2/hub/library/app/manifests/1")
    assert r.status == 200 and r.header("Docker-Content-Digest") == img["manifest"]
    r = c.request("GET", "/v2/soko/team/app/manifests/1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status == 200 and r.header("Docker-Content-Digest") == team_digest
    layer = json.loads(r.body)["layers"][0]["digest"]
    assert c.request("GET", f"/v2/soko/team/app/blobs/{layer}").status == 200
    r = c.request("GET", "/v2/wrong/library/app/manifests/1")
    assert r.status == 502 and "refused the credentials" in r.json()["errors"][0]["message"], r.body
    own, _ = c.push_image("mine/app", "1")  # not under a proxied namespace: an ordinary repository
    assert c.request("GET", "/v2/mine/app/manifests/1").status == 200
    assert c.request("PUT", "/v2/hub/library/app/manifests/2", body=b"{}",
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).status == 405


def test_soko_serve_proxy_flag(tmp_path, soko):
    """`soko serve --proxy URL`: an open upstream, no config file."""
    need_tool("docker-registry")
    open_up = start_distribution(tmp_path / "open-upstream", access_log=True)
    proc = None
    try:
        img = image_layout(tmp_path / "img")
        run(*SKOPEO, "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'img'}:latest",
            f"docker://{open_up.host}/library/app:1")
        proc = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), "serve", "--addr",
                                 "127.0.0.1:0", "--proxy", f"http://{open_up.host}"], stderr=subprocess.PIPE,
                                env=soko.env)
        line = proc.stderr.readline().decode()
        assert "listening on" in line, line
        host = line.split("listening on ")[1].split()[0].split("//")[1]
        info = json.loads(run(*SKOPEO, "inspect", "--tls-verify=false", f"docker://{host}/library/app:1"))
        assert info["Digest"] == img["manifest"]
        assert (soko.root / "registry" / "metadata.db").exists()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        open_up.stop()


class SlowRelay:
    """A TCP relay to `port` that hands the upstream's answers on at `rate` bytes/s."""

    def __init__(self, port: int, rate: int):
        self.port, self.rate = port, rate
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, self.rate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_clients_get_bytes_while_the_blob_downloads(upstream, tmp_path, stopping):
    """Upstream at 2 MB/s behind a slow link: the first client's bytes start long before the
    download ends, a second client joining midway gets the whole blob, one upstream GET."""
    img = image_layout(tmp_path / "img", layer_size=6 * 1024 * 1024)
    push_upstream(upstream, tmp_path / "img", "library/slow:1")
    relay = SlowRelay(int(upstream.host.rsplit(":", 1)[1]), 2 * 1024 * 1024)
    try:
        srv = proxy_server(tmp_path / "proxy", {"proxy": {"remoteurl": f"http://{relay.host}",
                                                          "username": UP_USER, "password": UP_PASSWORD}})
        stopping(srv)
        path = f"/v2/library/slow/blobs/{img['layer']}"
        seen: dict[str, dict] = {}

        def get(who: str) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            start = time.monotonic()
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200
            first = r.read(1)
            t_first = time.monotonic()
            body = first + r.read()
            seen[who] = {"start": start, "first": t_first, "end": time.monotonic(), "body": body}
            conn.close()

        a = threading.Thread(target=get, args=("a",))
        a.start()
        time.sleep(1.0)
        b = threading.Thread(target=get, args=("b",))
        b.start()
        a.join(60)
        b.join(60)
        assert seen["a"]["body"] == img["layer_bytes"] and seen["b"]["body"] == img["layer_bytes"]
        assert seen["a"]["end"] - seen["a"]["start"] > 2.0  # the link is slow ...
        assert seen["a"]["first"] - seen["a"]["start"] < 1.0  # ... yet bytes flow from the start
        assert seen["b"]["first"] < seen["a"]["end"]  # the latecomer too, before the download is done
        assert blob_gets(upstream, img["layer"]) == 1
    finally:
        relay.close()
