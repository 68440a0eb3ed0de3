"""Prometheus /metrics of a real server, parsed with prometheus_client's own
parser and checked against exactly the traffic each test made."""
from __future__ import annotations

import json
import os

from prometheus_client.parser import text_string_to_metric_families

from .conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256, unique
from .teams import PASSWORDS, Tokens, basic, team_config

BLOBS = "/v2/{name}/blobs/{digest}"
UPLOADS = "/v2/{name}/blobs/uploads/"
MANIFESTS = "/v2/{name}/manifests/{reference}"


def scrape(client, auth: str | None = None) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    r = client.request("GET", "/metrics", headers={"Authorization": auth} if auth else {})
    assert r.status == 200, (r.status, r.body)
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_traffic_made(fresh_server, soko):
    srv = fresh_server.configure({"metrics": {"access": "open"}}).start()
    c = srv.client()
    name = unique("metrics/app")
    sizes = [1000, 2000, 3000]  # N = 3 blob pushes; the last one is no manifest's: gc frees it
    blobs = [os.urandom(n) for n in sizes]
    digests = [c.push_blob(name, b) for b in blobs]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digests[0], "size": sizes[0]},
                           "layers": [{"mediaType": OCI_LAYER, "digest": digests[1], "size": sizes[1]}]}).encode()
    assert c.put_manifest(name, "v1", manifest).status == 201
    assert c.request("POST", f"/v2/{name}/blobs/uploads/").status == 202  # one upload left open
    pulls = [0, 1, 1, 0]  # M = 4 blob pulls
    for i in pulls:
        r = c.request("GET", f"/v2/{name}/blobs/{digests[i]}")
        assert r.status == 200 and r.body == blobs[i]
    missing = []  # K = 2 blob 404s
    for n in range(2):
        r = c.request("GET", f"/v2/{name}/blobs/{sha256(b'nothing %d' % n)}")
        assert r.status == 404
        missing.append(len(r.body))
    assert c.request("HEAD", f"/v2/{name}/blobs/{digests[2]}").status == 200
    soko("gc", "--registry", str(srv.root), "--grace", "0")  # one gc, in another process

    m = scrape(c)
    total = "soko_registry_http_requests_total"
    assert value(m, total, route=UPLOADS, method="POST", status="201") == 3
    assert value(m, total, route=UPLOADS, method="POST", status="202") == 1
    assert value(m, total, route=MANIFESTS, method="PUT", status="201") == 1
    assert value(m, total, route=BLOBS, method="GET", status="200") == len(pulls)
    assert value(m, total, route=BLOBS, method="GET", status="404") == 2
    assert value(m, total, route=BLOBS, method="HEAD", status="200") == 1
    assert value(m, "soko_registry_http_request_duration_seconds_count", route=BLOBS, method="GET") == len(pulls) + 2
    assert value(m, "soko_registry_http_request_duration_seconds_bucket", route=BLOBS, method="GET",
                 le="+Inf") == len(pulls) + 2
    assert value(m, "soko_registry_http_received_bytes_total", route=UPLOADS) == sum(sizes)
    assert value(m, "soko_registry_http_received_bytes_total", route=MANIFESTS) == len(manifest)
    # blob bodies by sendfile, the 404s' error bodies; HEAD sends none
    assert value(m, "soko_registry_http_sent_bytes_total", route=BLOBS) == sum(sizes[i] for i in pulls) + sum(missing)
    # stored after gc: config, layer and manifest
    assert value(m, "soko_registry_blobs") == 3
    assert value(m, "soko_registry_blob_bytes") == sizes[0] + sizes[1] + len(manifest)
    assert value(m, "soko_registry_repositories") == 1 and value(m, "soko_registry_tags") == 1
    assert value(m, "soko_registry_uploads_in_progress") == 1
    assert value(m, "soko_registry_gc_runs_total") == 1
    assert value(m, "soko_registry_gc_freed_bytes_total") == sizes[2]
    assert value(m, "soko_registry_gc_last_run_timestamp_seconds") > 0
    assert all(value(m, "soko_registry_auth_failures_total", reason=r) == 0
               for r in ("bad_credentials", "invalid_token", "unauthenticated", "insufficient_scope", "denied"))
    # the scrape itself is counted once it has been answered
    again = scrape(c)
    assert value(again, total, route="/metrics", method="GET", status="200") == 1
    assert value(again, total, route=BLOBS, method="GET", status="200") == len(pulls)


def test_metrics_for_one_account_and_auth_failures_by_reason(fresh_server):
    srv = fresh_server.configure(team_config(token={}, metrics={"access": "alice"})).start()
    anon = srv.client()
    r = anon.request("GET", "/metrics")
    assert r.status == 401 and r.header("WWW-Authenticate").startswith("Bearer "), r.headers
    assert srv.client(auth=basic("bob", PASSWORDS["bob"])).request("GET", "/metrics").status == 403
    alice = basic("alice", PASSWORDS["alice"])
    scrape(srv.client(), "Bearer " + Tokens(srv).token("alice", []))  # a token of the account will do too
    assert srv.client(auth="Bearer " + Tokens(srv).token("bob", [])).request("GET", "/metrics").status == 403
    before = scrape(srv.client(), alice)
    # one failure of each kind
    assert srv.client(auth=basic("alice", "wrong")).request("GET", "/v2/").status == 401  # bad_credentials
    assert srv.client(auth="Bearer e30.e30.AAAA").request("GET", "/v2/team/x/tags/list").status == 401  # invalid
    assert anon.request("GET", "/v2/team/x/tags/list").status == 401  # unauthenticated
    bob = srv.client(auth=basic("bob", PASSWORDS["bob"]))
    assert bob.request("POST", "/v2/team/x/blobs/uploads/").status == 403  # denied
    assert bob.request("POST", "/v2/team/x/blobs/uploads/").status == 403
    after = scrape(srv.client(), alice)
    failures = {r: value(after, "soko_registry_auth_failures_total", reason=r)
                - value(before, "soko_registry_auth_failures_total", reason=r)
                for r in ("bad_credentials", "invalid_token", "unauthenticated", "insufficient_scope", "denied")}
    assert failures == {"bad_credentials": 1, "invalid_token": 1, "unauthenticated": 1, "insufficient_scope": 0,
                        "denied": 2}, failures
    assert value(after, "soko_registry_http_requests_total", route="/metrics", method="GET", status="401") == 1
    assert value(after, "soko_registry_http_requests_total", route="/metrics", method="GET", status="403") == 2


def test_metrics_off_by_default_and_when_off(fresh_server, tmp_path):
    srv = fresh_server.start()
    r = srv.client().request("GET", "/metrics")
    assert r.status == 404 and r.codes == ["UNSUPPORTED"]
    srv.stop()
    srv.args = []
    srv.configure({"metrics": {"access": "off"}}).start()
    assert srv.client().request("GET", "/metrics").status == 404
