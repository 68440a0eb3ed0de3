"""Blob and upload endpoints against a real server over loopback."""
from __future__ import annotations

import os

from .conftest import POSTGRES, SQLITE, sha256, sha512, unique

METADATA_BACKENDS = (SQLITE, POSTGRES)

BACKENDS = ["directory", "s3"]


def test_base_endpoint(client):
    r = client.request("GET", "/v2/")
    assert r.status == 200
    assert r.json() == {}
    assert r.header("Docker-Distribution-Api-Version") == "registry/2.0"


def test_monolithic_post_then_put_and_get(client):
    name = unique()
    data = os.urandom(100_000)
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202
    loc = r.header("Location")
    assert loc.startswith(f"/v2/{name}/blobs/uploads/")
    assert r.header("Docker-Upload-UUID") and r.header("Range") == "0-0"
    assert int(r.header("OCI-Chunk-Min-Length")) > 0
    digest = sha256(data)
    r = client.request("PUT", f"{loc}?digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.body
    assert r.header("Location") == f"/v2/{name}/blobs/{digest}"
    assert r.header("Docker-Content-Digest") == digest

    r = client.request("GET", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.body == data
    assert r.header("Docker-Content-Digest") == digest
    assert r.header("Content-Type") == "application/octet-stream"
    r = client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Length") == str(len(data))
    assert r.header("Docker-Content-Digest") == digest


def test_single_post_with_digest(client):
    name = unique()
    data = b"single post"
    digest = sha256(data)
    r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=data)
    assert r.status == 201
    assert r.header("Location") == f"/v2/{name}/blobs/{digest}"
    assert client.request("GET", f"/v2/{name}/blobs/{digest}").body == data


def test_single_post_digest_mismatch_stores_nothing(client, server):
    name = unique()
    wrong = sha256(b"something else")
    r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={wrong}", body=b"actual bytes")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/{name}/blobs/{wrong}").status == 404
    assert not server.blob_exists(sha256(b"actual bytes"))


def test_range_requests(client):
    name = unique()
    data = bytes(range(256)) * 40
    digest = client.push_blob(name, data)
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == data[10:20]
    assert r.header("Content-Range") == f"bytes 10-19/{len(data)}"
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": f"bytes={len(data) - 5}-"})
    assert r.status == 206 and r.body == data[-5:]
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=-7"})
    assert r.status == 206 and r.body == data[-7:]
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status == 416
    assert r.header("Content-Range") == f"bytes */{len(data)}"
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=9-3"})
    assert r.status == 416


def test_blob_unknown_and_malformed(client):
    name = unique()
    client.push_blob(name, b"x")
    r = client.request("GET", f"/v2/{name}/blobs/{sha256(b'nope')}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]
    for bad in ("sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "A" * 64, "nocolon"):
        r = client.request("GET", f"/v2/{name}/blobs/{bad}")
        assert r.status == 400 and r.codes == ["DIGEST_INVALID"], bad


def test_names_validated(client):
    for bad in ("UPPER/case", "a//b", "-lead", "trail-", "a" * 256, "has%20space"):
        r = client.request("GET", f"/v2/{bad}/tags/list")
        assert r.status == 400 and r.codes == ["NAME_INVALID"], bad
    r = client.request("POST", "/v2/Bad_Name/blobs/uploads/")
    assert r.status == 400 and r.codes == ["NAME_INVALID"]


def test_blob_linked_per_repository(client):
    a, b = unique("a"), unique("b")
    digest = client.push_blob(a, b"only in a")
    assert client.request("GET", f"/v2/{a}/blobs/{digest}").status == 200
    r = client.request("GET", f"/v2/{b}/blobs/{digest}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]


def test_streamed_patch_then_put(client):
    name = unique()
    data = os.urandom(3 * 1024 * 1024 + 17)
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    r = client.request("PATCH", loc, body=data[:2_000_000])
    assert r.status == 202 and r.header("Range") == "0-1999999"
    r = client.request("PATCH", r.header("Location"), body=data[2_000_000:])
    assert r.status == 202 and r.header("Range") == f"0-{len(data) - 1}"
    r = client.request("PUT", f"{r.header('Location')}?digest={sha256(data)}")
    assert r.status == 201
    assert client.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data


def test_chunked_patch_with_content_range(client):
    name = unique()
    data = os.urandom(5000)
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"}).header("Location")
    r = client.request("PATCH", loc, body=data[:2000], headers={"Content-Range": "0-1999"})
    assert r.status == 202 and r.header("Range") == "0-1999"
    # out of order: skips ahead
    r = client.request("PATCH", loc, body=data[3000:4000], headers={"Content-Range": "3000-3999"})
    assert r.status == 416 and r.header("Range") == "0-1999" and r.header("Location") == loc
    # the same chunk sent twice
    r = client.request("PATCH", loc, body=data[:2000], headers={"Content-Range": "0-1999"})
    assert r.status == 416
    # malformed
    r = client.request("PATCH", loc, body=data[2000:3000], headers={"Content-Range": "bytes=junk"})
    assert r.status == 416
    # Content-Length disagreeing with the range
    r = client.request("PATCH", loc, body=data[2000:3000], headers={"Content-Range": "2000-2499"})
    assert r.status == 400 and r.codes == ["SIZE_INVALID"]
    # status GET
    r = client.request("GET", loc)
    assert r.status == 204 and r.header("Range") == "0-1999" and r.header("Location") == loc
    assert r.header("Docker-Upload-UUID") == loc.rsplit("/", 1)[1]
    r = client.request("PATCH", loc, body=data[2000:4000], headers={"Content-Range": "2000-3999"})
    assert r.status == 202 and r.header("Range") == "0-3999"
    # the final chunk in the closing PUT
    r = client.request("PUT", f"{loc}?digest={sha256(data)}", body=data[4000:],
                       headers={"Content-Range": "4000-4999"})
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{name}/blobs/{sha256(data)}").body == data
    # the session is gone
    r = client.request("GET", loc)
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]


def test_put_without_or_with_wrong_digest(client):
    name = unique()
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    client.request("PATCH", loc, body=b"abc")
    r = client.request("PUT", loc)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    r = client.request("PUT", f"{loc}?digest=sha256:bad")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    r = client.request("PUT", f"{loc}?digest={sha256(b'abd')}")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/{name}/blobs/{sha256(b'abc')}").status == 404
    assert client.request("GET", loc).status == 404  # a failed upload is over


def test_cancel_upload(client, server):
    name = unique()
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    client.request("PATCH", loc, body=b"partial")
    upload_id = loc.rsplit("/", 1)[1]
    assert server.ingest_exists(upload_id)
    r = client.request("DELETE", loc)
    assert r.status == 204
    assert not server.ingest_exists(upload_id)
    r = client.request("PATCH", loc, body=b"more")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]
    r = client.request("DELETE", loc)
    assert r.status == 404


def test_upload_bound_to_its_repository(client):
    a, b = unique("a"), unique("b")
    loc = client.request("POST", f"/v2/{a}/blobs/uploads/").header("Location")
    upload_id = loc.rsplit("/", 1)[1]
    r = client.request("PATCH", f"/v2/{b}/blobs/uploads/{upload_id}", body=b"x")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]
    r = client.request("GET", f"/v2/{a}/blobs/uploads/not-a-session")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]


def test_sha512_blobs(client):
    name = unique()
    data = os.urandom(70_000)
    digest = sha512(data)
    loc = client.request("POST", f"/v2/{name}/blobs/uploads/").header("Location")
    r = client.request("PUT", f"{loc}?digest={digest}", body=data)
    assert r.status == 201, r.body
    r = client.request("GET", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.body == data and r.header("Docker-Content-Digest") == digest
    r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha512(b'other')}", body=data)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


def test_mount_from_repository(client):
    src, dst, other = unique("src"), unique("dst"), unique("other")
    digest = client.push_blob(src, b"shared layer")
    # `from` names a repository that does not hold it: an upload starts instead
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={digest}&from={other}")
    assert r.status == 202 and r.header("Location")
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={digest}&from={src}")
    assert r.status == 201
    assert r.header("Location") == f"/v2/{dst}/blobs/{digest}"
    assert r.header("Docker-Content-Digest") == digest
    assert client.request("GET", f"/v2/{dst}/blobs/{digest}").body == b"shared layer"
    # unknown digest: upload
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={sha256(b'unknown')}&from={src}")
    assert r.status == 202
    # invalid digest or source: falls back to an upload
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount=sha256:zz&from={src}")
    assert r.status == 202
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={digest}&from=Bad..Name")
    assert r.status == 202


def test_automatic_mount_without_from(client):
    src, dst = unique("src"), unique("dst")
    digest = client.push_blob(src, b"auto mounted")
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={digest}")
    assert r.status == 201
    assert client.request("GET", f"/v2/{dst}/blobs/{digest}").body == b"auto mounted"
    r = client.request("POST", f"/v2/{dst}/blobs/uploads/?mount={sha256(b'nowhere')}")
    assert r.status == 202


def test_delete_blob(client):
    a, b = unique("a"), unique("b")
    digest = client.push_blob(a, b"to delete")
    client.request("POST", f"/v2/{b}/blobs/uploads/?mount={digest}&from={a}")
    r = client.request("DELETE", f"/v2/{a}/blobs/{digest}")
    assert r.status == 202
    assert client.request("GET", f"/v2/{a}/blobs/{digest}").status == 404
    assert client.request("GET", f"/v2/{b}/blobs/{digest}").status == 200  # shared storage, own link
    r = client.request("DELETE", f"/v2/{a}/blobs/{digest}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]


def test_empty_blob(client):
    name = unique()
    digest = client.push_blob(name, b"")
    r = client.request("GET", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "0"


def test_unknown_endpoint_and_method(client):
    r = client.request("GET", "/v3/")
    assert r.status == 404
    r = client.request("POST", f"/v2/{unique()}/blobs/{sha256(b'x')}")
    assert r.status == 405 and r.codes == ["UNSUPPORTED"]
