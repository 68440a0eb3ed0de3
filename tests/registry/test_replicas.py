"""Two `soko serve` replicas on one S3 bucket (radosgw) and one PostgreSQL
database, behind HAProxy round-robin, are one registry: an upload continues
on whichever replica the next chunk reaches, survives `kill -9` of the replica
writing it, tokens of one replica hold on the other, online gc runs on one
replica at a time, and real clients push and pull through the load balancer.
(The registry suite's conformance, client, gc and crash modules also run on
this stack: conftest.ALL_STACKS.)"""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.haproxy import REPLICA_HEADER

from .conftest import POSTGRES, Client, Stack, sha256, unique

STACKS = [Stack("s3", POSTGRES, replicas=2)]
MiB = 1024 * 1024


def _offset(c: Client, loc: str) -> tuple[int, str]:
    """(bytes the session holds, the replica that said so)"""
    r = c.request("GET", loc)
    assert r.status == 204, (r.status, r.body)
    return int(r.header("Range").split("-")[1]) + 1, r.header(REPLICA_HEADER)


def test_requests_go_round_robin_and_name_their_replica(server):
    c = server.client()
    seen = [c.request("GET", "/v2/").header(REPLICA_HEADER) for _ in range(6)]
    c.close()
    assert sorted(set(seen)) == ["r0", "r1"], seen
    assert all(a != b for a, b in zip(seen, seen[1:])), seen  # one by one, on one keep-alive connection


def test_a_chunked_upload_alternates_replicas(server):
    """Every chunk lands on the other replica than the one before; each replica
    then reports the whole offset (none answers from a stale memory of it)."""
    c = server.client()
    name = unique()
    data = os.urandom(6 * MiB + 12345)
    r = c.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202
    loc, served = r.header("Location"), [r.header(REPLICA_HEADER)]
    chunk = MiB + 7
    for start in range(0, len(data), chunk):
        body = data[start:start + chunk]
        r = c.request("PATCH", loc, body=body, headers={"Content-Range": f"{start}-{start + len(body) - 1}"})
        assert r.status == 202, (r.status, r.body)
        assert r.header("Range") == f"0-{start + len(body) - 1}"
        loc = r.header("Location")
        served.append(r.header(REPLICA_HEADER))
        # both replicas know where the upload is, whichever took the chunk
        offsets = dict(_offset(c, loc)[::-1] for _ in range(2))
        assert offsets == {"r0": start + len(body), "r1": start + len(body)}, offsets
    patches = served[1:]
    assert sorted(set(patches)) == ["r0", "r1"] and all(a != b for a, b in zip(patches, patches[1:])), served
    r = c.request("PUT", f"{loc}?digest={sha256(data)}")
    assert r.status == 201, (r.status, r.body)
    for _ in range(2):  # from each replica
        assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    c.close()


def _serving(srv, timeout: float = 20) -> str:
    """The replica an in-flight request is on, from HAProxy's session list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in srv.lb.command("show sess").splitlines():
            if "be=replicas" in line and " srv=r" in line:
                return line.split(" srv=")[1].split()[0]
        time.sleep(0.05)
    raise AssertionError("no request in flight")


def test_kill9_of_the_replica_writing_an_upload_then_resume_through_the_other(fresh_server):
    srv = fresh_server.start()
    c = srv.client()
    name = unique()
    data = os.urandom(24 * MiB)
    loc = c.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    assert c.request("PATCH", loc, body=data[:MiB]).status == 202  # an acknowledged chunk
    upload_id = loc.rsplit("/", 1)[1]

    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data) - MiB}\r\n\r\n".encode())
    s.sendall(data[MiB:20 * MiB])
    writer = srv.replica_of(_serving(srv))
    deadline = time.time() + 30
    while srv.ingest_offsets().get(upload_id, 0) < 10 * MiB and time.time() < deadline:
        time.sleep(0.1)
    assert srv.ingest_offsets().get(upload_id, 0) >= 10 * MiB  # parts of the half-sent chunk are in S3
    writer.kill9()
    s.close()
    other = next(r for r in srv.replicas if r is not writer)

    offset, who = _offset(c, loc)
    assert srv.replica_of(who) is other
    assert MiB <= offset <= 20 * MiB
    assert offset == srv.ingest_offsets()[upload_id]
    r = c.request("PATCH", loc, body=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 202 and srv.replica_of(r.header(REPLICA_HEADER)) is other
    r = c.request("PUT", f"{loc}?digest={sha256(data)}")
    assert r.status == 201, (r.status, r.body)
    r = c.request("GET", f"/v2/{name}/blobs/{sha256(data)}")
    assert r.status == 200 and sha256(r.body) == sha256(data)
    assert not srv.ingest_exists(upload_id)
    writer.start(writer.port)  # back in the rotation: it serves what the other one finished
    srv.lb.wait_up()
    served = {}
    for _ in range(4):
        r = c.request("HEAD", f"/v2/{name}/blobs/{sha256(data)}")
        served[r.header(REPLICA_HEADER)] = r.status
    assert served == {"r0": 200, "r1": 200}
    c.close()


def test_tokens_of_one_replica_hold_on_the_other(fresh_server, tmp_path):
    """Built-in token auth over replicas needs the same signing key and service
    name in every replica's config (registry/REPLICAS.md); then a token from
    either replica opens the other."""
    from registry.server.keys import make_signer

    from .teams import PASSWORDS, basic, team_config

    make_signer(tmp_path)
    srv = fresh_server.configure(team_config(token={"key": str(tmp_path / "token.key"),
                                                     "cert": str(tmp_path / "token.crt"),
                                                     "service": "registry.example"})).start()
    c = srv.client()
    issuers, used = set(), {}
    for _ in range(4):
        r = c.request("GET", "/token?service=registry.example&scope=repository:team/app:pull,push",
                      headers={"Authorization": basic("alice", PASSWORDS["alice"])})
        assert r.status == 200, r.body
        issuers.add(r.header(REPLICA_HEADER))
        bearer = {"Authorization": f"Bearer {r.json()['token']}"}
        for _ in range(2):
            r = c.request("GET", "/v2/team/app/tags/list", headers=bearer)
            used.setdefault(r.header(REPLICA_HEADER), set()).add(r.status)
    assert issuers == {"r0", "r1"} and used == {"r0": {404}, "r1": {404}}, (issuers, used)  # 404: let in
    r = c.request("GET", "/v2/team/app/tags/list", headers={"Authorization": basic("alice", "wrong")})
    assert r.status == 401
    c.close()


def test_online_gc_runs_on_one_replica_at_a_time(fresh_server):
    """Both replicas collect every 0.2 s; the runs recorded never overlap, and
    an image pushed meanwhile stays whole while unreferenced blobs go."""
    srv = fresh_server.configure({"gc": {"interval": 0.2, "grace": 2, "untagged": True}}).start()
    c = srv.client()
    name = unique()
    images = [c.push_image(name, f"v{i}", layers=2) for i in range(5)]
    loose = c.push_blob(name, b"loose " * 100)
    deadline = time.time() + 30
    while srv.blob_exists(loose) and time.time() < deadline:
        time.sleep(0.2)
    assert not srv.blob_exists(loose)
    for i, (digest, raw) in enumerate(images):
        assert c.request("GET", f"/v2/{name}/manifests/v{i}").body == raw
    c.close()
    import psycopg

    with psycopg.connect(srv.metadata) as db:
        runs = db.execute("SELECT finished - seconds, finished, runner FROM reg_gc_runs ORDER BY finished").fetchall()
    assert len(runs) >= 3 and len({r for _, _, r in runs}) == 2, runs  # both replicas collected, in turn
    for (_, end, _), (start, _, _) in zip(runs, runs[1:]):
        assert start >= end - 0.01, runs  # the next began after the last ended


def test_ui_sign_in_needs_stickiness(fresh_server):
    """The web UI's sessions live in one replica's memory: through HAProxy's
    cookie stickiness a signed-in browser stays signed in on every page; API
    clients, keeping no cookies, still go round-robin."""
    from tests.ui.visitor import Visitor

    from .teams import PASSWORDS, team_config

    srv = fresh_server.configure(team_config()).start()
    v = Visitor(srv.port)
    r = v.login("alice", PASSWORDS["alice"])
    assert r.status == 303, (r.status, r.body[:300])
    pages = {v.get("/ui/").header(REPLICA_HEADER) for _ in range(6)}
    assert all("Signed in as <strong>alice</strong>" in v.page("/ui/") for _ in range(6))
    assert len(pages) == 1
    v.close()
    api = srv.client()
    assert {api.request("GET", "/v2/").header(REPLICA_HEADER) for _ in range(4)} == {"r0", "r1"}
    api.close()


def test_soko_push_pull_through_the_load_balancer(server, soko, busybox_rootfs, tmp_path):
    host = f"127.0.0.1:{server.port}"
    name = unique("soko")
    soko("import", busybox_rootfs, "bb:1")
    soko("push", "bb:1", f"{host}/{name}:1")
    other = type(soko)(tmp_path / "store2")
    other("pull", f"{host}/{name}:1")
    assert other("images").stdout.count(f"{name}") == 1


def test_docker_push_pull_through_the_load_balancer(server, docker_engine):
    from tests.conftest import need_root

    need_root()
    docker, host = docker_engine, f"127.0.0.1:{server.port}"
    ref = f"{host}/{unique('docker')}:1"
    docker("tag", "busybox:local", ref)
    docker("push", ref)
    docker("rmi", ref)
    docker("pull", ref)
    assert docker.out("run", "--rm", "--network", "none", ref, "echo", "pulled").strip() == "pulled"
    docker("rmi", ref)


def test_concurrent_pushes_through_both_replicas(server):
    """Several clients push the same blob and different images at once: every push lands whole."""
    data = os.urandom(3 * MiB)
    errors: list[BaseException] = []

    def push(i: int) -> None:
        try:
            c = server.client()
            name = unique(f"p{i}")
            c.push_blob(name, data)
            digest, raw = c.push_image(name, "v1", layers=3)
            assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw
            assert c.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
            c.close()
        except BaseException as e:
            errors.append(e)
    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.fixture(autouse=True)
def _no_tracebacks(request):
    yield
    srv = request.node.funcargs.get("fresh_server")
    if srv is not None:
        assert "Traceback" not in srv.errors(), srv.errors()


def test_uploads_finished_on_the_other_replica_stop_counting_here(fresh_server):
    """A session counts against its client's cap on every replica that saw it;
    one finished on the other replica must not keep counting here until it
    idles out, or round-robin pushes hit the cap after a few blobs."""
    srv = fresh_server.configure({"limits": {"max_client_sessions": 3}}).start()
    c = srv.client()
    name = unique()
    for i in range(12):  # POST on one replica, PUT on the other
        data = f"blob {i}".encode()
        r = c.request("POST", f"/v2/{name}/blobs/uploads/")
        assert r.status == 202, (i, r.status, r.body)
        r2 = c.request("PUT", f"{r.header('Location')}?digest={sha256(data)}", body=data)
        assert r2.status == 201, (i, r2.status, r2.body)
        assert r.header(REPLICA_HEADER) != r2.header(REPLICA_HEADER)
    c.close()
