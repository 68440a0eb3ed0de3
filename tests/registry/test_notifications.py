"""Webhook notifications of a real server to a real HTTP receiver the test
runs: distribution's envelope, every event exactly once and in order after
the receiver was down (refused, then answering 500), events kept on disk
across kill -9, and pushes as fast while the receiver hangs."""
from __future__ import annotations

import json
import socket
import sqlite3
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import RegistryProc, unique

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP endpoint on a fixed port: down (nothing listens) until started;
    `mode` "ok" keeps the events, "fail" answers 500, "hang" never answers."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.mode = "ok"
        self.envelopes: list[dict] = []
        self.headers: list[dict] = []
        self.attempts = 0
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self, mode: str = "ok") -> "Receiver":
        self.mode = mode
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.mode == "hang":
                    outer.release.wait(120)
                    return
                if outer.mode == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.envelopes.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def events(self) -> list[dict]:
        return [e for env in self.envelopes for e in env["events"]]

    def wait_for(self, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more (no duplicate) comes after
        return self.events


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def endpoint(url: str, **kw) -> dict:
    return {"name": "hook", "url": url, "timeout": "2s", "threshold": 2, "backoff": "200ms",
            "headers": {"Authorization": ["Bearer hook-secret"]}, **kw}


def brief(events: list[dict]) -> list[tuple]:
    return [(e["action"], e["target"].get("repository"), e["target"].get("digest"), e["target"].get("tag"))
            for e in events]


def traffic(srv: RegistryProc) -> list[tuple]:
    """Push an image (config, layer, manifest), mount its layer elsewhere, pull it, delete
    it: the events that should be sent, in order."""
    c = srv.client()
    name, other = unique("hooks/app"), unique("hooks/other")
    digest, raw = c.push_image(name, "v1")
    m = json.loads(raw)
    config, layer = m["config"]["digest"], m["layers"][0]["digest"]
    assert c.request("POST", f"/v2/{other}/blobs/uploads/?mount={layer}&from={name}").status == 201
    assert c.request("GET", f"/v2/{name}/manifests/v1").status == 200
    assert c.request("GET", f"/v2/{name}/blobs/{layer}").status == 200
    assert c.request("HEAD", f"/v2/{name}/blobs/{layer}").status == 200  # a HEAD is no pull
    assert c.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    return [("push", name, layer, None), ("push", name, config, None), ("push", name, digest, "v1"),
            ("mount", other, layer, None), ("pull", name, digest, "v1"), ("pull", name, layer, None),
            ("delete", name, digest, None)]


def test_every_event_once_in_order_after_the_receiver_was_down(fresh_server, receiver):
    srv = fresh_server.configure({"notifications": {"endpoints": [endpoint(receiver.url)]}}).start()
    expected = traffic(srv)  # the receiver is down: connections refused
    time.sleep(1.5)
    receiver.start("fail")  # then it answers 500
    deadline = time.monotonic() + 10
    while receiver.attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.attempts >= 3 and not receiver.envelopes
    receiver.mode = "ok"
    events = receiver.wait_for(len(expected))
    assert brief(events) == expected
    assert len({e["id"] for e in events}) == len(events)
    for h in receiver.headers:
        assert h["Content-Type"] == MEDIA_TYPE and h["Authorization"] == "Bearer hook-secret"
    push = events[2]
    assert push["target"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert push["target"]["size"] == push["target"]["length"] > 0
    assert push["target"]["url"] == f"http://127.0.0.1:{srv.port}/v2/{expected[2][1]}/manifests/{expected[2][2]}"
    assert push["request"]["method"] == "PUT" and push["request"]["addr"] == "127.0.0.1"
    assert push["request"]["host"] == f"127.0.0.1:{srv.port}" and push["request"]["id"]
    assert push["request"]["useragent"] == ""  # http.client sends none
    assert push["source"]["addr"].endswith(f":{srv.port}") and push["source"]["instanceID"]
    assert push["timestamp"].endswith("Z")
    assert events[0]["target"]["mediaType"] == "application/octet-stream"
    assert events[3]["target"]["fromRepository"] == expected[0][1]
    assert "Traceback" not in srv.errors()


def test_ignored_actions_and_media_types(fresh_server, receiver):
    """Blob events (application/octet-stream) and pulls ignored: the manifest push and delete remain."""
    receiver.start()
    ep = endpoint(receiver.url, ignoredmediatypes=["application/octet-stream"], ignore={"actions": ["pull"]})
    srv = fresh_server.configure({"notifications": {"endpoints": [ep]}}).start()
    expected = [e for e in traffic(srv) if e[0] == "delete" or (e[0] == "push" and e[3] == "v1")]
    assert brief(receiver.wait_for(len(expected))) == expected


def test_events_survive_kill_9(fresh_server, receiver):
    srv = fresh_server.configure({"notifications": {"endpoints": [endpoint(receiver.url)]}}).start()
    expected = traffic(srv)  # nobody listens
    db = srv.root / "notifications.db"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as c:
            if c.execute("SELECT count(*) FROM queue").fetchone()[0] == len(expected):
                break
        time.sleep(0.05)
    srv.kill9()
    receiver.start()
    srv.start(srv.port)
    assert brief(receiver.wait_for(len(expected))) == expected
    srv.stop()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM queue").fetchone()[0] == 0


def _push_times(srv: RegistryProc, n: int) -> list[float]:
    c = srv.client()
    name = unique("hooks/timed")
    out = []
    for i in range(n):
        t = time.monotonic()
        c.push_blob(name, b"timed blob %d" % i)
        out.append(time.monotonic() - t)
    c.close()
    return out


def test_a_hanging_endpoint_does_not_slow_pushes(fresh_server, tmp_path, receiver):
    baseline_srv = RegistryProc(tmp_path / "baseline").start()
    try:
        _push_times(baseline_srv, 5)  # warm up
        baseline = _push_times(baseline_srv, 30)
    finally:
        baseline_srv.stop()
    receiver.start("hang")
    srv = fresh_server.configure({"notifications": {"endpoints": [endpoint(receiver.url, timeout="60s")]}}).start()
    _push_times(srv, 5)
    hanging = _push_times(srv, 30)
    assert receiver.attempts >= 1  # delivery is stuck in the hanging endpoint all along
    assert not receiver.envelopes
    assert max(hanging) < 2.0, hanging
    assert statistics.median(hanging) < 3 * statistics.median(baseline) + 0.02, (baseline, hanging)
