"""`soko serve` on embedded defaults, and `soko gc --registry` beside it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from tests.conftest import REPO
from tests.interop.tools import need_tool, run


def start(store_root, *args):
    p = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(store_root), "serve", *args],
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = p.stderr.readline()
    assert "listening on" in line, line + p.stderr.read()
    return p, line.split("listening on ")[1].split()[0]


def test_serve_defaults_to_store_root_and_gc_runs_beside_it(soko, busybox_rootfs, tmp_path):
    need_tool("skopeo")
    p, url = start(soko.root, "--addr", "127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"{url}/v2/") as r:
            assert r.status == 200
            assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        soko("import", busybox_rootfs, "bb:1")
        archive = tmp_path / "bb.tar"
        soko("save", "--format", "oci", "-o", archive, "bb:1")
        host = url.split("//")[1]
        run("skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{host}/team/bb:1")
        assert (soko.root / "registry").is_dir()
        with urllib.request.urlopen(f"{url}/v2/team/bb/tags/list") as r:
            assert json.load(r)["tags"] == ["1"]
        out = soko("gc", "--registry", "--dry-run", "--grace", "0").stdout
        assert out.startswith("Would remove 0 blobs")  # everything is tagged
        with urllib.request.urlopen(f"{url}/v2/team/bb/manifests/1") as r:
            assert r.status == 200
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)
    assert p.returncode == 0


def test_serve_bad_flags(soko):
    r = soko("serve", "--tls-cert", __file__, check=False)
    assert r.returncode == 2 and "go together" in r.stderr
