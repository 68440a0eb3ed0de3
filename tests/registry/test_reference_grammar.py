"""Names and tags in request paths follow the distribution-spec's ASCII
grammar, whole: a non-ASCII letter or a trailing newline (percent-encoded
in the path) is answered 400 with the spec's code and nothing is stored."""
from __future__ import annotations

import json

import pytest

from .conftest import sha256, unique


@pytest.fixture
def srv(fresh_server):
    return fresh_server.start()


def _fresh_manifest(c, name: str) -> tuple[bytes, str]:
    """A valid manifest whose blobs `name` holds, never PUT anywhere yet."""
    _, raw = c.push_image(name, "ok")
    fresh = json.loads(raw)
    fresh["annotations"] = {"only": unique()}
    data = json.dumps(fresh).encode()
    return data, sha256(data)


def _nothing_stored(srv, c, name: str, digest: str, catalog: dict) -> None:
    assert c.request("GET", "/v2/_catalog").json() == catalog
    assert c.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["ok"]
    assert c.request("HEAD", f"/v2/{name}/manifests/{digest}").status == 404
    assert not list(srv.root.rglob(digest.split(":")[1] + "*"))


BAD_TAGS = ["t%C3%A4g", "t%D9%A1", "latest%0A", "a%0Ab", "ok%0D"]
BAD_NAMES = ["f%C3%B6o", "foo%0A", "foo%0A/bar", "team/b%D0%B0r", "foo%0D"]


@pytest.mark.parametrize("code,bad", [("TAG_INVALID", t) for t in BAD_TAGS] + [("NAME_INVALID", n) for n in BAD_NAMES])
def test_manifest_put_with_a_bad_name_or_tag(srv, code, bad):
    c = srv.client()
    name = unique()
    raw, digest = _fresh_manifest(c, name)
    catalog = c.request("GET", "/v2/_catalog").json()
    if code == "TAG_INVALID":  # as the reference, and in the OCI-Tag form
        puts = [(name, bad), (name, f"{digest}?tag={bad}")]
    else:
        puts = [(repo, ref) for repo in (bad, f"{name}/{bad}") for ref in ("latest", digest)]
    for repo, ref in puts:
        r = c.put_manifest(repo, ref, raw)
        assert r.status == 400 and r.codes == [code], (repo, ref, r.status, r.body)
    _nothing_stored(srv, c, name, digest, catalog)


def test_a_trailing_newline_does_not_reach_an_endpoint(srv):
    c = srv.client()
    name = unique()
    c.push_image(name, "ok")
    assert c.request("GET", f"/v2/{name}/tags/list").status == 200
    r = c.request("GET", f"/v2/{name}/tags/list%0A")
    assert r.status == 404 and r.codes == ["UNSUPPORTED"], (r.status, r.body)
