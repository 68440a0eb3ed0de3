"""Where a blob is right after its push: in the page cache, so the first pull reads
memory and not the disk; with `direct_io = true` uploads bypass the page cache."""
from __future__ import annotations

import os

from ..pagecache import resident
from .conftest import unique

SIZE = 24 * 1024 * 1024 + 12345  # several writeback ranges and an unaligned end


def _push(srv, data: bytes) -> tuple[str, str]:
    c = srv.client()
    name = unique()
    digest = c.push_blob(name, data)
    c.close()
    return name, digest


def _pull(srv, name: str, digest: str) -> bytes:
    c = srv.client()
    r = c.request("GET", f"/v2/{name}/blobs/{digest}")
    c.close()
    assert r.status == 200
    return r.body


def _blob_path(srv, digest: str):
    return srv.root / "blobs" / "sha256" / digest.split(":", 1)[1]


def test_a_pushed_blob_is_read_from_memory(fresh_server):
    srv = fresh_server.start()
    data = os.urandom(SIZE)
    name, digest = _push(srv, data)
    assert resident(_blob_path(srv, digest)) >= SIZE - 4096
    assert _pull(srv, name, digest) == data


def test_direct_io_keeps_uploads_out_of_the_page_cache(fresh_server):
    srv = fresh_server.configure({"direct_io": True}).start()
    data = os.urandom(SIZE)
    name, digest = _push(srv, data)
    assert resident(_blob_path(srv, digest)) < 8 * 1024 * 1024
    assert _pull(srv, name, digest) == data
