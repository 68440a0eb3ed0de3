"""The registry page: storage used, blob count, the last garbage collection and
what it freed (recorded by gc itself, online or `soko gc --registry`), uploads in progress."""
from __future__ import annotations

import re
import time

from storage.units import human_size
from tests.registry.conftest import RegistryProc

from .images import push_image
from .visitor import Visitor


def _fact(html: str, label: str) -> str:
    m = re.search(rf"<dt>{label}</dt><dd>(.*?)</dd>", html, re.S)
    assert m, f"no {label!r} on the page"
    return re.sub(r"<[^>]+>", "", m.group(1)).strip()


def _disk(root) -> tuple[int, int]:
    files = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_storage_blobs_uploads_and_the_last_gc(tmp_path, soko):
    proc = RegistryProc(tmp_path / "root").start()  # no accounts: an open registry
    c = proc.client()
    v = Visitor(proc.port)
    try:
        push_image(c, "team/app", "v1")
        stray = b"nobody refers to me" * 100
        c.push_blob("team/app", stray)
        html = v.page("/ui/registry")
        count, size = _disk(tmp_path / "root")
        assert count == 5  # two layers, config, manifest, the stray blob
        assert _fact(html, "Blobs") == "5" and _fact(html, "Storage used") == human_size(size, sep=" ")
        assert "Never run on this registry" in html
        assert "<h2 id=\"up-h\">Uploads in progress</h2>\n<p>None.</p>" in html

        r = c.request("POST", "/v2/team/incoming/blobs/uploads/")
        assert r.status == 202
        r = c.request("PATCH", r.header("Location"), body=b"x" * 1500,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status == 202
        html = v.page("/ui/registry")
        row = re.search(r'<tr>\s*<td data-label="Repository"><a[^>]*>team/incoming</a></td>(.*?)</tr>', html, re.S)
        assert row and "1.5 kB" in row.group(1)

        time.sleep(0.05)
        out = soko("gc", "--registry", str(tmp_path / "root"), "--grace", "0").stdout
        assert "Removed 1 blobs" in out
        html = v.page("/ui/registry")
        assert _fact(html, "Freed") == f"{human_size(len(stray), sep=' ')} (1 blobs)"
        assert _fact(html, "Blobs") == "4"  # the walk is redone after a gc
        assert "team/incoming" in html  # a live upload outlives gc (upload_ttl)
    finally:
        v.close()
        c.close()
        proc.stop()


def test_online_gc_is_recorded_too(tmp_path):
    proc = RegistryProc(tmp_path / "root", args=["--gc-interval", "0.3"])
    proc.configure({"gc": {"grace": 0}}).start()
    c = proc.client()
    v = Visitor(proc.port)
    try:
        c.push_blob("team/app", b"garbage" * 50)
        freed = f"{human_size(350, sep=' ')} freed"
        deadline = time.monotonic() + 90  # housekeeping wakes at most once a minute
        # "All runs", not the last run's "Freed": a run every 0.3 s soon follows the one that freed it
        while time.monotonic() < deadline:
            html = v.page("/ui/registry")
            if "Never run" not in html and _fact(html, "All runs").endswith(freed):
                break
            time.sleep(0.5)
        html = v.page("/ui/registry")
        assert "Runs online every 0.3 s" in html
        assert _fact(html, "All runs").endswith(freed), _fact(html, "All runs")
    finally:
        v.close()
        c.close()
        proc.stop()
