"""Uploads that survive disconnects, restarts and `kill -9`; concurrent pushes."""
from __future__ import annotations

import os
import socket
import threading
import time

from .conftest import sha256, unique

BACKENDS = ["directory", "s3"]


def _raw_patch_then_drop(port: int, path: str, announced: int, payload: bytes, pause: float = 0.3) -> None:
    """Send a PATCH announcing `announced` bytes, send only `payload`, then hang up."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Length: {announced}\r\n\r\n".encode())
    s.sendall(payload)
    time.sleep(pause)
    s.close()


def _offset(client, loc: str) -> int:
    r = client.request("GET", loc)
    assert r.status == 204, r.body
    return int(r.header("Range").split("-")[1]) + 1


def _offset_settles_at(client, loc: str, expected: int, timeout: float = 15) -> int:
    """The server may still be taking in the dropped request: wait for it."""
    deadline = time.time() + timeout
    offset = _offset(client, loc)
    while offset != expected and time.time() < deadline:
        time.sleep(0.05)
        offset = _offset(client, loc)
    return offset


def test_disconnect_mid_patch_then_resume(client, server):
    name = unique()
    data = os.urandom(2 * 1024 * 1024)
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    sent = 700_000
    _raw_patch_then_drop(server.port, loc, len(data), data[:sent])
    # nothing is visible as a blob
    assert client.request("HEAD", f"/v2/{name}/blobs/{sha256(data)}").status == 404
    assert client.request("HEAD", f"/v2/{name}/blobs/{sha256(data[:sent])}").status == 404
    offset = _offset_settles_at(client, loc, sent)
    assert offset == sent  # what arrived is kept; the client resumes there
    r = client.request("PATCH", loc, body=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 202
    r = client.request("PUT", f"{loc}?digest={sha256(data)}")
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data


def test_disconnect_mid_chunk_with_content_range(client, server):
    name = unique()
    data = os.urandom(300_000)
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    client.request("PATCH", loc, body=data[:100_000], headers={"Content-Range": "0-99999"})
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 100000-299999\r\n"
              f"Content-Length: 200000\r\n\r\n".encode() + data[100_000:150_000])
    time.sleep(0.3)
    s.close()
    offset = _offset_settles_at(client, loc, 150_000)
    assert offset == 150_000
    # the old range is now out of order; the reported offset is the way on
    r = client.request("PATCH", loc, body=data[100_000:], headers={"Content-Range": "100000-299999"})
    assert r.status == 416 and r.header("Range") == "0-149999"
    r = client.request("PUT", f"{loc}?digest={sha256(data)}", body=data[offset:],
                       headers={"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 201
    assert client.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data


def test_kill9_mid_upload_then_resume(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    data = os.urandom(12 * 1024 * 1024)
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    c.request("PATCH", loc, body=data[:1_000_000])  # a finished chunk
    upload_id = loc.rsplit('/', 1)[1]

    def stored() -> int:
        return srv.ingest_offsets().get(upload_id, 0)

    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data) - 1_000_000}\r\n\r\n".encode())
    s.sendall(data[1_000_000:10_000_000])
    deadline = time.time() + 20
    while stored() < 5_000_000 and time.time() < deadline:
        time.sleep(0.05)
    assert stored() >= 5_000_000
    srv.kill9()
    s.close()
    c.close()

    srv.start()
    c = srv.client()
    assert c.request("HEAD", f"/v2/{name}/blobs/{sha256(data)}").status == 404
    offset = _offset(c, loc)
    assert 5_000_000 <= offset <= 10_000_000
    assert offset == stored()
    r = c.request("PATCH", loc, body=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 202
    r = c.request("PUT", f"{loc}?digest={sha256(data)}")
    assert r.status == 201, r.body
    assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    assert not srv.ingest_exists(upload_id)
    c.close()


def test_everything_survives_restart(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    digest, raw = c.push_image(name, "keep")
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    c.request("PATCH", loc, body=b"half")
    c.close()
    srv.restart()
    c = srv.client()
    assert c.request("GET", f"/v2/{name}/manifests/keep").body == raw
    assert _offset(c, loc) == 4
    r = c.request("PUT", f"{loc}?digest={sha256(b'half and whole')}", body=b" and whole")
    assert r.status == 201
    c.close()


def test_concurrent_pushes_of_the_same_blob(server):
    data = os.urandom(6 * 1024 * 1024)
    digest = sha256(data)
    repos = [unique("a"), unique("b"), unique("c")]
    results: dict[str, int] = {}

    def push(repo: str) -> None:
        c = server.client()
        loc = c.request("POST", f"/v2/{repo}/blobs/uploads/").header("Location")
        for i in range(0, len(data), 2 * 1024 * 1024):
            r = c.request("PATCH", loc, body=data[i:i + 2 * 1024 * 1024])
            assert r.status == 202
            loc = r.header("Location")
        results[repo] = c.request("PUT", f"{loc}?digest={digest}").status
        c.close()

    threads = [threading.Thread(target=push, args=(r,)) for r in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {r: 201 for r in repos}
    c = server.client()
    for repo in repos:
        assert c.request("GET", f"/v2/{repo}/blobs/{digest}").body == data
    c.close()
    leftovers = [ref for ref, size in server.ingest_offsets().items() if size == len(data)]
    assert leftovers == []
