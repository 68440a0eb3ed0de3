"""Bad input gets the spec's answer, never a 500, and leaves no traceback in the server log."""
from __future__ import annotations

import json
import socket

from .conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256, unique


def raw_request(port: int, data: bytes, timeout: float = 10) -> int | None:
    """Send bytes as they are (no client library tidies them); the answer's status, None if none came."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(timeout)
        try:
            s.sendall(data)
            head = b""
            while b"\r\n" not in head:
                more = s.recv(4096)
                if not more:
                    break
                head += more
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            return None
    line = head.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


def test_deeply_nested_json_is_manifest_invalid(client):
    name = unique()
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        r = client.put_manifest(name, "deep", raw)
        assert r.status == 400 and r.codes == ["MANIFEST_INVALID"], (r.status, r.body[:200])


def test_pagination_numbers_must_be_ascii_digits(client):
    name = unique()
    client.push_image(name, "v1")
    for bad in ("%C2%B2", "%D9%A3", "9" * 5000, "-1", "1.5", "", "%201", "10001"):
        for path in (f"/v2/{name}/tags/list?n={bad}", f"/v2/_catalog?n={bad}"):
            r = client.request("GET", path)
            assert r.status == 400 and r.codes == ["PAGINATION_NUMBER_INVALID"], (path, r.status, r.body[:200])
    assert client.request("GET", f"/v2/{name}/tags/list?n=1").json()["tags"] == ["v1"]


def test_empty_suffix_range_is_unsatisfiable(client):
    name = unique()
    data = bytes(range(256)) * 4
    digest = client.push_blob(name, data)
    for rng in ("bytes=-0", "bytes=-000", "BYTES=-0"):
        r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": rng})
        assert r.status == 416 and r.body == b"", (rng, r.status)
        assert r.header("Content-Range") == f"bytes */{len(data)}"
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=-1"})
    assert r.status == 206 and r.body == data[-1:]


def test_media_types_must_be_ascii(client):
    name = unique()
    cfg = client.push_blob(name, b"{}")
    for field in ("artifactType", "config"):
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}, "layers": []}
        if field == "config":
            doc["config"]["mediaType"] = "application/vnd.\ud800+json"
        else:
            doc["artifactType"] = "application/vnd.\ud800"
        r = client.put_manifest(name, "v1", json.dumps(doc).encode())
        assert r.status == 400 and r.codes == ["MANIFEST_INVALID"], (field, r.status, r.body[:200])


def _battery(name: str, digest: str, loc: str) -> list[bytes]:
    """Requests a hostile client might send; none may crash a handler."""
    cfg = sha256(b"{}")
    manifests = [
        b"[" * 200_000,
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG,
                    "digest": cfg, "size": float("nan")}, "layers": []}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG,
                    "digest": 5, "size": 2}, "layers": {}}).encode(),
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "%s", "size": 1e999}, "layers": []}' %
        cfg.encode(),
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {"mediaType": "'
        + OCI_CONFIG.encode() + b'", "digest": "' + cfg.encode() + b'", "size": ' + b"9" * 5000 + b'}, "layers": []}',
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG,
                    "digest": cfg, "size": 2}, "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": -1}],
                    "subject": 5, "annotations": {"k": "\ud800"}}).encode(),
        b"\xff\xfe{}",
    ]
    out = [b"PUT /v2/%s/manifests/x HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
           % (name.encode(), OCI_MANIFEST.encode(), len(m), m) for m in manifests]
    path = f"/v2/{name}/blobs/{digest}".encode()
    for rng in (b"bytes=-0", b"bytes=0-0,1-1", b"bytes=x-y", b"bytes=" + b"9" * 5000 + b"-", b"items=0-1",
                b"bytes=--1", b"bytes=\xd9\xa3-", b"bytes=5-2"):
        out.append(b"GET %s HTTP/1.1\r\nHost: x\r\nRange: %s\r\n\r\n" % (path, rng))
    for q in (b"n=%C2%B2", b"n=" + b"9" * 5000, b"last=%ED%A0%80", b"last=%00", b"n=%zz", b"last=" + b"z" * 5000):
        out.append(b"GET /v2/%s/tags/list?%s HTTP/1.1\r\nHost: x\r\n\r\n" % (name.encode(), q))
        out.append(b"GET /v2/_catalog?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q)
    for cr in (b"bytes \xc2\xb2-\xc2\xb3", b"0-" + b"9" * 5000, b"99999999999999999999999-0", b"-5"):
        out.append(b"PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Range: %s\r\nContent-Length: 1\r\n\r\nx"
                   % (loc.encode(), cr))
    out += [
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        b"GET /v2/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 100,  # TLS to a plain port
        b"PATCH %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n" % loc.encode(),
        b"PUT /v2/%s/manifests/y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\"\r\nQ\r\n"
        % name.encode(),
        b"POST /v2/%s/blobs/uploads/?digest=sha256:%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        % (name.encode(), "\u0663".encode() * 64),
        b"POST /v2/%s/blobs/uploads/?mount=%s&from=%%ED%%A0%%80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        % (name.encode(), digest.encode()),
        b"GET /v2/%s/referrers/%s?artifactType=%%ED%%A0%%80 HTTP/1.1\r\nHost: x\r\n\r\n" % (name.encode(),
                                                                                          digest.encode()),
        b"GET /v2/%s/manifests/%%FF%%FE HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode(),
        b"GET /v2/%s/blobs/uploads/%%00 HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode(),
        b"GET /v2/%s/manifests/x HTTP/1.1\r\nHost: x\r\nAccept: \xff\xfe, */*;q=\xff\r\n\r\n" % name.encode(),
        b"GET /v2/" + b"a/" * 2000 + b"tags/list HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD %s HTTP/1.1\r\nHost: x\r\nIf-None-Match: \xff\r\nIf-Modified-Since: yesterday\r\n\r\n" % path,
        b"GET %s HTTP/1.1\r\nHost: x\r\nIf-Range: \"nope\"\r\nRange: bytes=0-1\r\n\r\n" % path,
        b"PUT /v2/%s/manifests/z HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
        % name.encode(),
        b"DELETE %s?digest=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (loc.encode(), b"\xff" * 10),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\r\n\r\n",
    ]
    return out


def test_a_battery_of_hostile_requests_leaves_no_traceback(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    digest = c.push_blob(name, b"some layer")
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    answers = {(i, data[:80]): raw_request(srv.port, data) for i, data in enumerate(_battery(name, digest, loc))}
    assert not [k for k, status in answers.items() if status is not None and status >= 500], answers
    assert sum(status is not None for status in answers.values()) >= len(answers) - 2, answers
    # still serving, and the session the PATCHes aimed at is intact
    assert c.request("GET", "/v2/").status == 200
    assert c.request("PUT", f"{loc}?digest={sha256(b'ok')}", body=b"ok").status == 201
    c.close()
    srv.stop()
    log = srv.errors()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
