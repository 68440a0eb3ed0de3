"""Uploads under hostile clients: session floods, slow headers and bodies,
garbage collection racing a stalled upload. Floods are bounded in count and
time and stay on loopback (127.0.0.2 plays a second client)."""
from __future__ import annotations

import os
import socket
import time

from registry.server.gc import collect

from .conftest import sha256, unique


def _open(port: int, head: str, body: bytes = b"") -> socket.socket:
    """A raw connection that has sent `head` (request line and headers) and `body`."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head.encode() + b"\r\n" + body)
    return s


def _answer(s: socket.socket, timeout: float) -> int | None:
    """The status the server answered on `s`, or None when it closed without one."""
    s.settimeout(timeout)
    try:
        line = s.recv(65536).split(b"\r\n", 1)[0]
    except ConnectionResetError:
        return None
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


def _dropped_within(s: socket.socket, seconds: float, drip: bytes = b"x", every: float = 0.3) -> float | None:
    """Keep sending `drip` every `every` s; the time until the server answered or hung up, None if it never did."""
    t0 = time.monotonic()
    s.settimeout(every)
    while time.monotonic() - t0 < seconds:
        try:
            s.sendall(drip)
            if s.recv(65536) is not None:  # an answer or b"" (closed): either way, dropped
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
    return None


def _post(c, name: str) -> str:
    r = c.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, (r.status, r.body)
    return r.header("Location")


# -- item 4: sessions hold nothing between requests; caps answer 429 ---------------------------------
def test_idle_sessions_hold_no_descriptor_and_no_buffer(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    chunk = os.urandom(2 * 1024 * 1024)
    c.push_blob(name, chunk)  # warm up: first-use allocations are not per session
    fds, rss = srv.fds(), srv.rss_mb()
    locs = [_post(c, name) for _ in range(40)]
    for loc in locs:
        assert c.request("PATCH", loc, body=chunk).status == 202
    # (each of the 8 worker threads may open its own SQLite connection: a few descriptors, not 2 a session)
    assert srv.fds() - fds < 30, f"{srv.fds() - fds} more descriptors for 40 idle sessions"
    assert srv.rss_mb() - rss < 32, f"{srv.rss_mb() - rss:.0f} MB more for 40 idle sessions"
    for i, loc in enumerate(locs[:3]):  # each resumes where it stood, digest intact
        tail = f"tail {i}".encode()
        r = c.request("PUT", f"{loc}?digest={sha256(chunk + tail)}", body=tail)
        assert r.status == 201, r.body
        assert c.request("GET", f"/v2/{name}/blobs/{sha256(chunk + tail)}").body == chunk + tail
    c.close()


def _read_chars(pid: int) -> int:
    """Bytes the process has read() or pread() so far (files and sockets alike)."""
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_a_session_goes_on_without_rereading_its_file(fresh_server):
    """The parked hash carries the digest from one request to the next, also past a refused one."""
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    big = os.urandom(8 * 1024 * 1024)
    loc = _post(c, name)
    assert c.request("PATCH", loc, body=big).status == 202
    before = _read_chars(srv.proc.pid)
    r = c.request("PATCH", loc, body=b"x", headers={"Content-Range": "5-5"})
    assert r.status == 416
    assert c.request("PATCH", loc, body=b"tail").status == 202
    assert c.request("PUT", f"{loc}?digest={sha256(big + b'tail')}").status == 201
    read = _read_chars(srv.proc.pid) - before
    assert read < len(big) // 2, f"{read} bytes read back for a session holding {len(big)}"
    c.close()


def test_a_session_flood_cannot_exhaust_descriptors(fresh_server):
    """150 sessions with a chunk each, on a server allowed 128 descriptors: pushes still work, never 500."""
    srv = fresh_server
    srv.nofile = 128
    srv.start()
    c = srv.client()
    name = unique()
    statuses = []
    for _ in range(150):
        r = c.request("POST", f"/v2/{name}/blobs/uploads/")
        statuses.append(r.status)
        if r.status == 202:
            statuses.append(c.request("PATCH", r.header("Location"), body=b"x" * 1000).status)
    assert 500 not in statuses and set(statuses) <= {202, 429}, sorted(set(statuses))
    other = unique()
    digest, raw = c.push_image(other, "v1")
    assert c.request("GET", f"/v2/{other}/manifests/v1").body == raw
    c.close()
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


def test_session_caps_per_client_and_in_total(fresh_server):
    srv = fresh_server.configure({"limits": {"max_client_sessions": 5, "max_upload_sessions": 8}}).start()
    a, b = srv.client(), srv.client(source="127.0.0.2")
    name = unique()
    mine = [_post(a, name) for _ in range(5)]
    r = a.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 429 and r.codes == ["TOOMANYREQUESTS"]
    assert int(r.header("Retry-After")) >= 1
    assert a.push_blob(name, b"a monolithic POST is no session")  # still served
    theirs = [_post(b, name) for _ in range(3)]  # another client is not held up by a's sessions
    r = b.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 429 and r.codes == ["TOOMANYREQUESTS"]  # 8 in all
    # a finished and a cancelled session make room again
    assert a.request("PUT", f"{mine[0]}?digest={sha256(b'done')}", body=b"done").status == 201
    assert a.request("DELETE", mine[1]).status == 204
    theirs += [_post(b, name), _post(b, name)]
    assert b.request("POST", f"/v2/{name}/blobs/uploads/").status == 429
    for c in (a, b):
        c.close()


def test_idle_sessions_stop_counting_but_stay_resumable(fresh_server):
    srv = fresh_server.configure({"limits": {"max_client_sessions": 2, "session_idle": 0.5}}).start()
    c = srv.client()
    name = unique()
    first = _post(c, name)
    assert c.request("PATCH", first, body=b"kept ").status == 202
    _post(c, name)
    assert c.request("POST", f"/v2/{name}/blobs/uploads/").status == 429
    time.sleep(0.8)
    _post(c, name)  # the idle ones no longer count
    r = c.request("PUT", f"{first}?digest={sha256(b'kept and done')}", body=b"and done")
    assert r.status == 201, r.body
    c.close()


# -- item 5: slow headers and bodies are dropped ----------------------------------------------------
def test_slow_headers_are_dropped(fresh_server):
    srv = fresh_server.configure({"limits": {"header_timeout": 0.5}}).start()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /v2/ HTTP/1.1\r\nX-Slow: ")
    took = _dropped_within(s, 8.0, every=0.2)
    s.close()
    assert took is not None and took < 3, took
    c = srv.client()
    assert c.request("GET", "/v2/").status == 200
    c.close()


def test_slow_bodies_are_dropped_and_free_their_slot(fresh_server):
    srv = fresh_server.configure({"limits": {"body_timeout": 0.5, "body_min_rate": 1000,
                                             "max_concurrent_uploads": 1}}).start()
    c = srv.client()
    name = unique()
    loc = _post(c, name)
    s = _open(srv.port, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n", b"x" * 10)
    took = _dropped_within(s, 8.0, every=0.2)
    s.close()
    assert took is not None and took < 3, took
    # the slot is free again, and what arrived is kept for a resume
    assert c.push_blob(name, b"next upload")
    r = c.request("GET", loc)
    assert r.status == 204
    kept = int(r.header("Range").split("-")[1]) + 1 if r.header("Range") != "0-0" else 0
    assert 10 <= kept < 100
    # a slow manifest body is dropped the same way
    s = _open(srv.port, f"PUT /v2/{name}/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                        f"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n", b"{")
    took = _dropped_within(s, 8.0, drip=b" ", every=0.2)
    s.close()
    assert took is not None and took < 3, took
    # slow but steady is fine: 40 kB in 1 s (two windows), well above the minimum rate
    data = os.urandom(40_000)
    s = _open(srv.port, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n")
    for i in range(0, len(data), 4000):
        s.sendall(data[i:i + 4000])
        time.sleep(0.1)
    assert _answer(s, 10) == 202
    s.close()
    c.close()
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


# -- item 7: garbage collection never takes an upload being received -------------------------------
def test_online_gc_spares_a_stalled_monolithic_upload(fresh_server):
    srv = fresh_server.configure({"gc": {"interval": 0.2, "grace": 0, "upload_ttl": 0.5}}).start()
    name = unique()
    data = os.urandom(3_000_000)
    s = _open(srv.port, f"POST /v2/{name}/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
                        f"Content-Length: {len(data)}\r\n", data[:1_000_000])
    deadline = time.monotonic() + 10
    while not any(p.name.startswith("upload-") for p in (srv.root / "ingest").iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.2)  # six collections with grace 0 while it stalls
    s.sendall(data[1_000_000:])
    assert _answer(s, 20) == 201
    s.close()
    c = srv.client()
    assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    c.close()


def test_offline_gc_spares_a_session_whose_chunk_is_arriving(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    data = os.urandom(2_000_000)
    loc = _post(c, name)
    s = _open(srv.port, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n", data[:500_000])
    upload_file = srv.root / "ingest" / f"upload-{loc.rsplit('/', 1)[1]}"
    deadline = time.monotonic() + 10
    while not upload_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    report = collect(srv.root, grace=0, upload_ttl=0.001)  # another process: `soko gc --grace 0`
    assert report.uploads_removed == 0 and upload_file.exists()
    s.sendall(data[500_000:])
    assert _answer(s, 20) == 202
    s.close()
    r = c.request("PUT", f"{loc}?digest={sha256(data)}")
    assert r.status == 201, r.body
    c.close()
