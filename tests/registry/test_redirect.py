"""`soko serve --storage s3://... --redirect`: blob GETs answer 307 to a presigned
URL of the S3 object, and the clients that follow it (soko, skopeo) never hand
the registry's credentials to the S3 origin."""
from __future__ import annotations

import json
import subprocess
from urllib.parse import urlsplit

import pytest

from tests.client.proxy import Proxy

from .conftest import RegistryProc, sha256, unique
from .layouts import busybox_layout
from .teams import PASSWORDS, basic, team_config

pytestmark = pytest.mark.interop


@pytest.fixture
def s3_front(radosgw):
    """radosgw behind a proxy that records every request's headers."""
    with Proxy(radosgw.endpoint.split("//")[1], intercept=lambda seen: None) as p:
        yield p


def test_redirect_to_presigned_urls_without_the_registry_credentials(radosgw, s3_front, tmp_path, soko):
    url = radosgw.bucket().replace(radosgw.endpoint, f"http://{s3_front.host}")
    srv = RegistryProc(tmp_path / "root", args=["--redirect"], storage_url=url, env=radosgw.env())
    srv.configure(team_config()).start()
    try:
        auth = basic("alice", PASSWORDS["alice"])
        c = srv.client(auth=auth)
        name = unique("team/app")
        host = f"127.0.0.1:{srv.port}"
        busybox_layout(tmp_path / "layout")
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds",
                        f"alice:{PASSWORDS['alice']}", f"oci:{tmp_path / 'layout'}:latest", f"docker://{host}/{name}:v1"],
                       check=True, capture_output=True)
        raw = c.request("GET", f"/v2/{name}/manifests/v1",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).body
        layer = json.loads(raw)["layers"][0]["digest"]

        r = c.request("GET", f"/v2/{name}/blobs/{layer}")
        assert r.status == 307, r.body
        where = urlsplit(r.header("Location"))
        assert where.netloc == s3_front.host and "X-Amz-Signature=" in where.query
        assert r.header("Docker-Content-Digest") == layer
        assert c.request("HEAD", f"/v2/{name}/blobs/{layer}").status == 200  # HEAD answers here
        assert c.request("GET", f"/v2/{name}/manifests/v1").body == raw  # manifests are served, not redirected
        assert srv.client().request("GET", f"/v2/{name}/blobs/{layer}").status == 401  # the redirect needs rights

        env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
        soko("login", "-u", "alice", "--password-stdin", host, input=PASSWORDS["alice"] + "\n", env=env)
        before = len(s3_front.requests)
        soko("pull", f"{host}/{name}:v1", env=env)
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--src-creds", f"alice:{PASSWORDS['alice']}",
                        f"docker://{host}/{name}:v1", f"oci:{tmp_path / 'oci'}:x"], check=True, capture_output=True)
        for d in json.loads(raw)["layers"]:
            blob = tmp_path / "oci" / "blobs" / "sha256" / d["digest"].split(":")[1]
            assert sha256(blob.read_bytes()) == d["digest"]

        presigned = [s for s in s3_front.requests[before:] if "X-Amz-Signature=" in s.path]
        assert len(presigned) >= 2 * len(json.loads(raw)["layers"])  # soko's and skopeo's layers came from S3
        for seen in s3_front.requests:
            assert "authorization" not in seen.headers or seen.headers["authorization"].startswith("AWS4-HMAC"), \
                (seen.method, seen.path, seen.headers)
            assert seen.headers.get("authorization") != auth
        assert all("authorization" not in s.headers for s in presigned)
    finally:
        srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()
