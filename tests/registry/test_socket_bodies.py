"""Big request bodies read straight from the socket (registry/server/sockbody.py):
the same answers and the same state as aiohttp's path, for whole bodies, cut
ones, wrong digests, slow ones and several at once, and the connection goes on."""
from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.interop.tools import need_tool, run
from tests.tarballs import make_tar

from .conftest import Client, sha256, unique
from .layouts import write_image
from .test_resilience import _offset_settles_at

BIG = 12 * 1024 * 1024  # above sockbody.MIN_BODY
TAKEN = "soko_registry_socket_bodies_total"


def _metric(c: Client, name: str) -> float:
    """The sum of a metric's samples on the server's /metrics."""
    r = c.request("GET", "/metrics")
    assert r.status == 200, r.body
    return sum(s.value for family in text_string_to_metric_families(r.body.decode())
               for s in family.samples if s.name == name)


def _taken(c: Client) -> float:
    """Bodies the server read from the socket so far."""
    return _metric(c, TAKEN)


def _server(fresh_server, limits: dict | None = None):
    return fresh_server.configure({"metrics": {"access": "open"}, "limits": limits or {}}).start()


def _post(c: Client, name: str) -> str:
    r = c.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, (r.status, r.body)
    return r.header("Location")


def _read_answer(s: socket.socket, buf: bytearray, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from `s` (Content-Length bodies only); what follows stays in `buf`."""
    s.settimeout(timeout)
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            raise ConnectionError(f"closed before an answer: {bytes(buf)!r}")
        buf += got
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        got = s.recv(65536)
        if not got:
            raise ConnectionError("closed inside an answer")
        rest += got
    buf[:] = rest[size:]
    return int(lines[0].split()[1]), headers, rest[:size]


def _done(srv, c: Client) -> None:
    """Stop the server: nothing it logged may be a traceback."""
    c.close()
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


def test_a_big_put_is_read_from_the_socket_and_the_connection_goes_on(fresh_server):
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    data = os.urandom(BIG + 12345)
    loc = _post(c, name)
    # body and the next request in one go: the server must read exactly the body, no byte more
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PUT {loc}?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
              f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n".encode()
              + data + f"GET /v2/{name}/blobs/{sha256(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = bytearray()
    status, headers, _ = _read_answer(s, buf)
    assert status == 201 and headers.get("connection", "").lower() != "close", (status, headers)
    status, _, body = _read_answer(s, buf)
    assert status == 200 and body == data
    # and another big one on the same connection, sent after the answer this time
    other = os.urandom(BIG)
    loc = _post(c, name)
    s.sendall(f"PUT {loc}?digest={sha256(other)} HTTP/1.1\r\nHost: x\r\n"
              f"Content-Length: {len(other)}\r\n\r\n".encode() + other)
    assert _read_answer(s, buf)[0] == 201
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_answer(s, buf)[0] == 200
    s.close()
    assert _taken(c) == 2
    assert _metric(c, "soko_registry_http_received_bytes_total") == len(data) + len(other)
    assert c.request("GET", f"/v2/{name}/blobs/{sha256(other)}").body == other
    _done(srv, c)


def test_a_big_patch_then_an_empty_put_keep_one_connection(fresh_server):
    """skopeo's way: PATCH with a Content-Length, then the closing PUT on the same connection."""
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    data = os.urandom(BIG)
    loc = _post(c, name)
    r = c.request("PATCH", loc, body=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202 and r.header("Range") == f"0-{len(data) - 1}", (r.status, r.body)
    sock = c.conn.sock
    r = c.request("PUT", f"{r.header('Location')}?digest={sha256(data)}")
    assert r.status == 201, r.body
    assert c.conn.sock is sock  # no reconnection
    assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    assert _taken(c) == 1
    c.close()


def test_a_cut_big_put_leaves_no_blob_and_a_session_that_resumes(fresh_server):
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    for sent, reset in ((BIG + 777, False), (BIG // 2 * 3, True)):  # a clean close, then a reset (RST)
        data = os.urandom(2 * BIG)
        loc = _post(c, name)
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(f"PUT {loc}?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:sent])
        time.sleep(0.3)
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        assert c.request("HEAD", f"/v2/{name}/blobs/{sha256(data)}").status == 404
        assert c.request("HEAD", f"/v2/{name}/blobs/{sha256(data[:sent])}").status == 404
        offset = _offset_settles_at(c, loc, sent)
        assert 0 < offset <= sent
        if not reset:
            assert offset == sent  # a clean close: everything that was sent arrived and is kept
        r = c.request("PATCH", loc, body=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
        assert r.status == 202, r.body
        r = c.request("PUT", f"{loc}?digest={sha256(data)}")
        assert r.status == 201, r.body
        assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    assert _taken(c) >= 3  # the two cut PUTs and the resuming PATCH
    _done(srv, c)


def test_a_big_put_with_the_wrong_digest_is_refused_and_the_connection_goes_on(fresh_server):
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    data = os.urandom(BIG)
    wrong = sha256(data + b"!")
    loc = _post(c, name)
    r = c.request("PUT", f"{loc}?digest={wrong}", body=data)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"], (r.status, r.body)
    sock = c.conn.sock
    for digest in (wrong, sha256(data)):
        assert c.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert c.conn.sock is sock
    assert c.request("GET", loc).status == 404  # the session is gone, as on aiohttp's path
    assert not [p for p in (srv.root / "ingest").iterdir() if p.name.startswith("upload-")]
    assert _taken(c) == 1
    c.close()


def test_concurrent_big_puts(fresh_server):
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    blobs = [os.urandom(BIG + i) for i in range(7)]  # more than the threads that take bodies over
    statuses: list[int] = []

    def push(data: bytes) -> None:
        pc = srv.client()
        loc = _post(pc, name)
        statuses.append(pc.request("PUT", f"{loc}?digest={sha256(data)}", body=data).status)
        pc.close()

    threads = [threading.Thread(target=push, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * len(blobs)
    for data in blobs:
        assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    assert 1 <= _taken(c) <= len(blobs)
    c.close()


def test_a_slow_big_body_is_dropped_and_what_arrived_is_kept(fresh_server):
    srv = _server(fresh_server, {"body_timeout": 0.5, "body_min_rate": 100_000})
    c = srv.client()
    loc = _post(c, unique())
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * BIG}\r\n\r\n".encode() + b"x" * BIG)
    t0 = time.monotonic()
    s.settimeout(0.2)
    answered = None
    while time.monotonic() - t0 < 8:
        try:
            s.sendall(b"x")  # 5 bytes a second: far below the minimum rate
            got = s.recv(65536)
            answered = got.split(b"\r\n", 1)[0]
            break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            answered = b""
            break
    took = time.monotonic() - t0
    s.close()
    assert answered is not None and took < 3, (answered, took)
    assert answered in (b"", b"HTTP/1.1 408 Request Timeout"), answered
    assert BIG <= _offset_settles_at(c, loc, BIG) < BIG + 100
    assert _taken(c) == 1
    c.close()


def test_over_tls_big_bodies_stay_on_aiohttps_path(fresh_server):
    srv = fresh_server.configure({"metrics": {"access": "open"}})
    srv.args = [*srv.args, "--tls-self-signed"]
    srv.start()
    ctx = ssl.create_default_context(cafile=str(srv.root / "tls" / "self-signed.crt"))
    c = Client("127.0.0.1", srv.port, tls=ctx)
    name = unique()
    data = os.urandom(BIG)
    digest = c.push_blob(name, data)
    assert c.request("GET", f"/v2/{name}/blobs/{digest}").body == data
    assert _taken(c) == 0
    c.close()


def test_chunked_bodies_stay_on_aiohttps_path(fresh_server):
    """docker push sends its PATCH chunked: no Content-Length, nothing to take over."""
    srv = _server(fresh_server)
    c = srv.client()
    name = unique()
    data = os.urandom(BIG)
    loc = _post(c, name)
    c.conn.putrequest("PATCH", loc)
    c.conn.putheader("Transfer-Encoding", "chunked")
    c.conn.endheaders()
    for i in range(0, len(data), 1 << 20):
        piece = data[i:i + (1 << 20)]
        c.conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    c.conn.send(b"0\r\n\r\n")
    r = c.conn.getresponse()
    r.read()
    assert r.status == 202
    r = c.request("PUT", f"{r.headers['Location']}?digest={sha256(data)}")
    assert r.status == 201, r.body
    assert _taken(c) == 0
    c.close()


def test_the_server_stops_promptly_while_a_big_body_stalls(fresh_server):
    srv = _server(fresh_server)
    c = srv.client()
    loc = _post(c, unique())
    c.close()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * BIG}\r\n\r\n".encode() + b"x" * BIG)
    time.sleep(0.5)  # taken over, waiting for the rest
    t0 = time.monotonic()
    srv.stop()
    took = time.monotonic() - t0
    s.close()
    assert srv.proc.returncode == 0 and took < 10, (srv.proc.returncode, took)
    srv.start()
    c = srv.client()
    assert _offset_settles_at(c, loc, BIG) == BIG  # what arrived before the stop is kept
    c.close()


@pytest.mark.interop
def test_skopeo_pushes_and_pulls_a_big_layer(fresh_server, tmp_path):
    """skopeo PATCHes a layer with its Content-Length, then PUTs on the same connection."""
    need_tool("skopeo")
    srv = _server(fresh_server)
    c = srv.client()
    tar = make_tar([("file", "big", os.urandom(BIG), 0o644)])
    image = write_image(tmp_path / "src", tar, {"config": {"Cmd": ["/big"]}}, level=1)
    host, name = f"127.0.0.1:{srv.port}", unique("skopeo")
    run("skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:latest",
        f"docker://{host}/{name}:v1")
    assert _taken(c) == 1
    run("skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", f"docker://{host}/{name}:v1",
        f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / image["layer"].split(":")[1]).read_bytes() == image["layer_bytes"]
    _done(srv, c)
