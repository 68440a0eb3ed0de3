"""Two `soko serve` processes on one PostgreSQL database and one shared root
directory serve one registry: what one stores the other serves, their online
garbage collections take turns (an advisory lock), neither deletes a blob the
other is linking, and a namespace's quota holds across both."""
from __future__ import annotations

import json
import random
import threading
import time

import psycopg
import pytest

from registry.server.metadb.postgres import GC_RUN, LOCK_CLASS

from .conftest import OCI_CONFIG, OCI_MANIFEST, RegistryProc, sha256, unique
from .test_gc import blob_file


@pytest.fixture
def replicas(tmp_path, pg_url):
    root = tmp_path / "root"
    procs = [RegistryProc(root, metadata=pg_url) for _ in range(2)]
    yield procs
    for p in procs:
        p.stop()
    assert "Traceback" not in procs[0].errors(), procs[0].errors()  # one log: named after the shared root


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql, params).fetchall()


def side_by_side(work, n: int) -> None:
    """work(k) for k in range(n), each in a thread of its own; returns when all are done."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def config_manifest(config_digest: str, size: int, n: str | None = None) -> bytes:
    """An image manifest of no layers (annotated `n`: a manifest of its own)."""
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
         "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": size}}
    if n is not None:
        m["annotations"] = {"n": n}
    return json.dumps(m).encode()


def test_what_one_replica_stores_the_other_serves(replicas):
    a, b = (p.start() for p in replicas)
    ca, cb = a.client(), b.client()
    name = unique("shared")
    digest, raw = ca.push_image(name, "v1")
    assert cb.request("GET", f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["v1"]}
    assert cb.request("GET", f"/v2/{name}/manifests/v1").body == raw
    assert name in cb.request("GET", "/v2/_catalog").json()["repositories"]
    # a chunked upload started on one replica and finished on the other
    loc = cb.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    assert ca.request("PATCH", loc, body=b"first half, ").status == 202
    assert cb.request("PATCH", loc, body=b"second half").status == 202
    blob = sha256(b"first half, second half")
    assert ca.request("PUT", f"{loc}?digest={blob}").status == 201
    assert cb.request("GET", f"/v2/{name}/blobs/{blob}").body == b"first half, second half"
    # a tag deleted through one is gone on the other
    assert cb.request("DELETE", f"/v2/{name}/manifests/v1").status == 202
    assert ca.request("GET", f"/v2/{name}/manifests/v1").status == 404
    assert ca.request("GET", f"/v2/{name}/manifests/{digest}").status == 200
    ca.close()
    cb.close()


def test_online_gc_runs_on_one_replica_at_a_time(replicas, pg_url):
    for p in replicas:
        p.configure({"gc": {"interval": "100ms", "grace": 0}}).start()
    holder = psycopg.connect(pg_url, autocommit=True)
    time.sleep(1.5)
    # while something else holds the collectors' lock, neither replica collects
    assert holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, GC_RUN)) is not None
    held_from = time.time()
    time.sleep(1.5)
    held_until = time.time()
    holder.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, GC_RUN))
    holder.close()
    time.sleep(1.5)
    runs = rows(pg_url, "SELECT finished - seconds, finished, runner FROM reg_gc_runs ORDER BY finished")
    runners = {r for _, _, r in runs}
    assert len(runners) == 2, runners  # both replicas collected, each at its turn
    assert not [r for r in runs if r[0] < held_until and r[1] > held_from], "a collection ran through the hold"
    assert any(r[0] > held_until for r in runs), "collections did not come back after the hold"
    for (start1, end1, r1), (start2, end2, r2) in zip(runs, runs[1:]):
        assert end1 <= start2, f"{r1} collected until {end1}, {r2} started at {start2}"


def test_gc_on_one_replica_never_deletes_what_the_other_links(replicas, pg_url):
    """Replica A collects ten times a second; through replica B, four clients keep
    linking the same 32 blobs and 32 manifests and unlinking them again, so every
    collection finds dozens of unreferenced ones whose bytes are older than the
    grace, to re-check and delete while B links them anew (fewer blobs come back
    sooner, more often while gc holds them: without gc's exclusion of links, a
    run loses 5 to 30 blobs). Right after B said 201,
    A must serve the bytes: a link younger than the grace stays, and a linked blob's
    bytes stay whatever its age. (A link older than the grace may go: on a machine
    so slow that the GET came that late, a 404 BLOB_UNKNOWN is counted, not failed.)"""
    grace = 0.25
    b = replicas[1].start()
    c = b.client()
    name = unique("race")
    cfg = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_digest = c.push_blob(name, cfg)
    keep = config_manifest(config_digest, len(cfg))
    assert c.put_manifest(name, "keep", keep).status == 201  # keeps the config linked
    c.close()
    a = replicas[0].configure({"gc": {"interval": "100ms", "grace": f"{int(grace * 1000)}ms"}}).start()
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    # at least 12 s, and on until the collections have had enough to do (a loaded machine
    # gets through fewer pushes, hence fewer unreferenced blobs, per second), 90 s at most
    start = time.time()
    done = threading.Event()
    checked = [start + 12.0]

    def busy() -> bool:
        now = time.time()
        with lock:
            if done.is_set() or now < checked[0]:
                return not done.is_set()
            checked[0] = now + 0.5
            runs, removed = rows(pg_url, "SELECT count(*), coalesce(sum(blobs_removed), 0) FROM reg_gc_runs")[0]
            if (runs > 20 and removed > 100) or now - start > 90:
                done.set()
        return not done.is_set()

    def count(what: str) -> None:
        with lock:
            outcomes[what] = outcomes.get(what, 0) + 1

    def check(cl, what: str, path: str, data: bytes, since: float) -> None:
        """`since`: before the push began, so the link is younger than now - since."""
        r = cl.request("GET", path)
        if r.status == 200 and r.body == data:
            count(f"{what} served")
        elif r.status == 404 and r.body and r.codes == ["BLOB_UNKNOWN"] and time.time() - since >= grace:
            count(f"{what} link expired before the GET (slow machine)")
        else:
            count(f"{what} LOST {r.status} {r.body[:60]!r}")

    def pusher(k: int) -> None:
        cb, ca = b.client(), a.client()
        i = k
        while busy():
            i += 4
            blob = f"blob {i % 32}".encode()
            since = time.time()
            r = cb.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(blob)}", body=blob)
            count(f"blob pushed {r.status}")
            check(ca, "blob", f"/v2/{name}/blobs/{sha256(blob)}", blob, since)
            cb.request("DELETE", f"/v2/{name}/blobs/{sha256(blob)}")  # garbage again, bytes still there
            m = config_manifest(config_digest, len(cfg), str(i % 32))
            since = time.time()
            r = cb.put_manifest(name, sha256(m), m)
            count(f"manifest pushed {r.status}")
            check(ca, "manifest", f"/v2/{name}/manifests/{sha256(m)}", m, since)  # gc removes no manifest here
            cb.request("DELETE", f"/v2/{name}/manifests/{sha256(m)}")
            # paced: on an idle machine the 4 pushers came back to each of the 32 blobs well within
            # the grace, so no blob's bytes ever grew old enough to collect (0-6 removed in 90 s);
            # a random pause keeps some coming back sooner than the grace, most later
            time.sleep(random.uniform(0, 0.06))
        cb.close()
        ca.close()
    side_by_side(pusher, 4)
    a.stop()
    b.stop()
    assert outcomes.get("blob pushed 201") and outcomes.get("manifest pushed 201"), outcomes
    assert not [k for k in outcomes if "LOST" in k or ("pushed" in k and not k.endswith("201"))], outcomes
    runs, removed = rows(pg_url, "SELECT count(*), sum(blobs_removed) FROM reg_gc_runs")[0]
    assert runs > 20 and removed > 100, (runs, removed)
    dangling = [(repo, d) for repo, d in rows(pg_url, "SELECT repo, digest FROM reg_blob_links UNION "
                                                      "SELECT repo, digest FROM reg_manifests")
                if not blob_file(a.root, d).exists()]
    print(outcomes, runs, removed, len(dangling))
    assert dangling == [], (dangling, outcomes, runs)


def test_a_quota_holds_across_replicas(replicas, pg_url):
    """Each namespace has room for one of two blobs; one push of each pair goes to
    each replica at the same moment. Exactly one of every pair gets in: the quota
    is counted in the shared database, under a lock both replicas take."""
    rounds = 40
    spaces = [unique("q") for _ in range(rounds)]
    for p in replicas:
        p.configure({"quotas": {ns: 100 for ns in spaces}}).start()
    barrier = threading.Barrier(2)
    results: dict[str, list[int]] = {ns: [] for ns in spaces}

    def pusher(k: int) -> None:
        c = replicas[k].client()
        for ns in spaces:
            blob = f"{k} {ns}".encode().ljust(60, b".")
            barrier.wait(timeout=30)
            r = c.request("POST", f"/v2/{ns}/app/blobs/uploads/?digest={sha256(blob)}", body=blob)
            assert r.status == 201 or (r.status == 403 and r.codes == ["DENIED"]), (r.status, r.body)
            results[ns].append(r.status)
        c.close()
    side_by_side(pusher, 2)
    both = [ns for ns, got in results.items() if sorted(got) != [201, 403]]
    assert both == [], f"{len(both)} of {rounds} namespaces took both pushes (or neither): {results}"
    used = rows(pg_url, "SELECT repo, CAST(SUM(size) AS BIGINT) FROM reg_blob_links GROUP BY repo")
    assert sorted(used) == sorted((f"{ns}/app", 60) for ns in spaces)
    # and the refusal holds on either replica afterwards
    for p in replicas:
        c = p.client()
        r = c.request("POST", f"/v2/{spaces[0]}/app/blobs/uploads/?digest={sha256(b'x' * 41)}", body=b"x" * 41)
        assert r.status == 403 and "uses 60 of its 100 bytes" in r.json()["errors"][0]["message"], r.body
        c.close()


def test_many_concurrent_manifest_puts_under_a_small_connection_limit(tmp_path, pg_server):
    """A role allowed 12 connections serves 48 manifest PUTs at once: a push's
    pin (held from the commit of its bytes to their link) takes no connection
    of its own, so the server's connections stay its worker threads' and one
    pin holder's, however many pushes are pinned together."""
    role = unique("pins").replace("-", "_")
    url = pg_server.database()
    db = url.rsplit("/", 1)[1]
    pg_server.sql("postgres", f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 12")  # not a superuser: the limit holds
    pg_server.sql("postgres", f"ALTER DATABASE {db} OWNER TO {role}")
    server = RegistryProc(tmp_path / "root", metadata=url.replace("//soko@", f"//{role}@"))
    try:
        s = server.start()
        c = s.client()
        name = unique("many")
        cfg = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        config_digest = c.push_blob(name, cfg)
        c.close()
        statuses: list[tuple[int, bytes]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(48)

        def pusher(k: int) -> None:
            cl = s.client()
            m = config_manifest(config_digest, len(cfg), str(k))
            barrier.wait(timeout=30)
            r = cl.put_manifest(name, f"t{k}", m)
            with lock:
                statuses.append((r.status, r.body[:200]))
            cl.close()
        side_by_side(pusher, 48)
        assert [x for x in statuses if x[0] != 201] == [] and len(statuses) == 48
        connections = rows(url, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))[0][0]
        assert connections <= 12, connections
        s.stop()
        assert "Traceback" not in s.errors(), s.errors()[-3000:]
    finally:
        server.stop()
        pg_server.drop(url)
        pg_server.sql("postgres", f"DROP ROLE IF EXISTS {role}")
