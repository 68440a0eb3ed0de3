"""Whole blobs sent by a thread of their own (blobsend.py): exact bytes on plain TCP
and TLS, keep-alive after them, ranges and conditional requests beside them, and
clients that go away or stop reading."""
from __future__ import annotations

import os
import socket
import ssl
import threading
import time

from .conftest import Client, sha256, unique

SIZE = 5 * 1024 * 1024 + 777  # above blobsend.MIN_SIZE, not a multiple of its buffer


def _get_raw(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def _fds_settle(srv, expected: int, timeout: float = 10) -> int:
    deadline = time.time() + timeout
    while srv.fds() > expected and time.time() < deadline:
        time.sleep(0.05)
    return srv.fds()


def test_whole_blob_then_more_on_the_same_connection(client):
    name = unique()
    data = os.urandom(SIZE)
    digest = client.push_blob(name, data)
    small = client.push_blob(name, b"small")
    r = client.request("GET", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.body == data
    assert r.header("Content-Length") == str(SIZE) and r.header("Docker-Content-Digest") == digest
    # the same connection goes on: the body was framed exactly
    assert client.request("GET", f"/v2/{name}/blobs/{small}").body == b"small"
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=1000-1999"})
    assert r.status == 206 and r.body == data[1000:2000]
    r = client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.header("Content-Length") == str(SIZE) and r.body == b""
    assert client.request("GET", f"/v2/{name}/blobs/{digest}").body == data


def test_concurrent_whole_blobs(server):
    name = unique()
    data = os.urandom(SIZE)
    c = server.client()
    digest = c.push_blob(name, data)
    c.close()
    bodies: list[bytes] = []

    def pull() -> None:
        cc = server.client()
        bodies.append(cc.request("GET", f"/v2/{name}/blobs/{digest}").body)
        cc.close()

    threads = [threading.Thread(target=pull) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 6 and all(sha256(b) == digest for b in bodies)


def test_whole_blob_over_tls(fresh_server):
    srv = fresh_server
    srv.args = ["--tls-self-signed"]
    srv.start()
    c = Client("127.0.0.1", srv.port, tls=ssl.create_default_context(cafile=str(srv.root / "tls" / "self-signed.crt")))
    name = unique()
    data = os.urandom(SIZE)
    digest = c.push_blob(name, data)
    assert c.request("GET", f"/v2/{name}/blobs/{digest}").body == data
    c.close()


def test_client_gone_mid_body(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    data = os.urandom(64 * 1024 * 1024)
    digest = c.push_blob(name, data)
    assert c.request("GET", "/v2/").status == 200
    c.close()
    idle = srv.fds()
    s = _get_raw(srv.port, f"/v2/{name}/blobs/{digest}")
    assert s.recv(65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with a reset
    s.close()
    assert _fds_settle(srv, idle) <= idle  # the sending thread let go of the file and the socket
    c = srv.client()
    assert sha256(c.request("GET", f"/v2/{name}/blobs/{digest}").body) == digest
    c.close()
    assert "Traceback" not in srv.errors(), srv.errors()


def test_client_that_stops_reading_is_dropped(fresh_server):
    """Like a body that comes too slowly: nothing taken for body_timeout seconds
    ends the connection, and nothing stays held for it."""
    srv = fresh_server.configure({"limits": {"body_timeout": 1.0}}).start()
    c = srv.client()
    name = unique()
    size = 64 * 1024 * 1024
    digest = c.push_blob(name, os.urandom(size))
    c.close()
    s = _get_raw(srv.port, f"/v2/{name}/blobs/{digest}")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert s.recv(65536)
    time.sleep(3)  # read nothing meanwhile
    got = 0
    s.settimeout(10)
    try:
        while got < size and (chunk := s.recv(1 << 20)):
            got += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    s.close()
    assert got < size // 2  # cut short, not sent on once the client came back
    c = srv.client()
    assert c.request("GET", "/v2/").status == 200
    c.close()
    assert "Traceback" not in srv.errors(), srv.errors()
