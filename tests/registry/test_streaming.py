"""Big uploads stream: the event loop keeps answering and memory stays flat."""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from .conftest import unique


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_big_sha512_upload_streams_off_the_loop(fresh_server):
    srv = fresh_server.start()
    size = 256 * 1024 * 1024
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB, not all zeros
    h = hashlib.sha512()
    for _ in range(size // len(block)):
        h.update(block)
    digest = f"sha512:{h.hexdigest()}"
    name = unique()
    c = srv.client()
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    rss_before = _peak_rss_mb(srv.proc.pid)

    def body():
        for _ in range(size // len(block)):
            yield block

    result = {}

    def upload() -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        conn.request("PUT", f"{loc}?digest={digest}", body=body(),
                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        result["status"] = conn.getresponse().status
        conn.close()

    t = threading.Thread(target=upload)
    probe = srv.client()
    latencies = []
    t.start()
    while t.is_alive():  # the server must keep answering while it receives, hashes and re-hashes
        t0 = time.perf_counter()
        assert probe.request("GET", "/v2/").status == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.01)
    t.join()
    assert result["status"] == 201
    assert len(latencies) > 10
    assert max(latencies) < 0.25, sorted(latencies)[-5:]
    # streamed: the server never held the blob in memory
    assert _peak_rss_mb(srv.proc.pid) - rss_before < 64
    r = c.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.header("Content-Length") == str(size)
    probe.close()
    c.close()
