"""Basic auth under hostile clients: no user enumeration by timing, no 500
for passwords bcrypt refuses, and a flood of bad passwords from one client
does not slow the others. Floods are bounded and stay on loopback."""
from __future__ import annotations

import base64
import statistics
import subprocess
import threading
import time

import pytest

from .conftest import sha256, unique


def basic(user: str, password: str | bytes) -> str:
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


@pytest.fixture
def auth_server(fresh_server, tmp_path):
    """A server whose one user has a cost-10 bcrypt hash: each check takes tens of milliseconds."""
    path = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-bBc", "-C", "10", str(path), "alice", "s3cret"], check=True, capture_output=True)
    fresh_server.args = ["--htpasswd", str(path)]
    return fresh_server.start()


def _timed(c, header: str) -> float:
    t0 = time.perf_counter()
    r = c.request("GET", "/v2/", headers={"Authorization": header})
    took = time.perf_counter() - t0
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"], (r.status, r.body)
    return took


def test_an_unknown_user_takes_as_long_as_a_wrong_password(auth_server):
    c = auth_server.client()
    # taken in turns, and the fastest of each kept: load only ever adds time, to either
    wrongs, unknowns = [], []
    for i in range(7):
        wrongs.append(_timed(c, basic("alice", f"wrong{i}")))
        unknowns.append(_timed(c, basic(f"mallory{i}", "s3cret")))
    wrong, unknown = min(wrongs), min(unknowns)
    assert wrong > 0.005, wrong  # a real bcrypt check
    assert unknown > wrong / 2, f"unknown user answered in {unknown * 1000:.1f} ms, wrong password in " \
                                f"{wrong * 1000:.1f} ms"
    c.close()


def test_passwords_bcrypt_refuses_are_401(auth_server):
    c = auth_server.client()
    for pw in ("s3cret" + "x" * 100, "x" * 73, b"s3cret\x00", "ä" * 40):
        r = c.request("GET", "/v2/", headers={"Authorization": basic("alice", pw)})
        assert r.status == 401 and r.codes == ["UNAUTHORIZED"], (pw, r.status, r.body)
    r = c.request("GET", "/v2/", headers={"Authorization": basic("nobody", "y" * 200)})
    assert r.status == 401
    assert c.request("GET", "/v2/", headers={"Authorization": basic("alice", "s3cret")}).status == 200
    c.close()
    auth_server.stop()
    assert "Traceback" not in auth_server.errors(), auth_server.errors()


def test_a_refused_value_is_answered_from_memory(auth_server):
    c = auth_server.client()
    header = basic("alice", "not it")
    first = _timed(c, header)
    again = statistics.median(_timed(c, header) for _ in range(5))
    assert again < first / 3, (first, again)
    c.close()


def test_a_bad_password_flood_does_not_slow_other_clients(auth_server):
    """16 threads from 127.0.0.2 send wrong passwords (at most 30 each, at most 20 s)
    while alice, from 127.0.0.1, pushes blobs: her requests stay fast."""
    srv = auth_server
    stop = threading.Event()
    flood_statuses: list[int] = []

    def flood(k: int) -> None:
        c = srv.client(source="127.0.0.2")
        deadline = time.monotonic() + 20
        for i in range(30):
            if stop.is_set() or time.monotonic() > deadline:
                break
            r = c.request("GET", "/v2/", headers={"Authorization": basic("alice", f"guess-{k}-{i}")})
            flood_statuses.append(r.status)
        c.close()

    alice = srv.client(auth=basic("alice", "s3cret"))
    assert alice.request("GET", "/v2/").status == 200  # verified once, remembered after
    threads = [threading.Thread(target=flood, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the flood is on
    name = unique()
    took = []
    try:
        for i in range(10):
            data = f"alice's layer {i}".encode() * 1000
            t0 = time.perf_counter()
            r = alice.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(data)}", body=data)
            took.append(time.perf_counter() - t0)
            assert r.status == 201, (r.status, r.body)
    finally:
        stop.set()
        for t in threads:
            t.join()
        alice.close()
    assert set(flood_statuses) <= {401, 429} and 500 not in flood_statuses
    assert statistics.median(took) < 0.1 and max(took) < 0.5, [round(t, 3) for t in took]
