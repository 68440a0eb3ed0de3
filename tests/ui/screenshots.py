"""Screenshots of the UI's four pages for docs/ui/ (README.md shows them):

    .venv/bin/python -m tests.ui.screenshots docs/ui

A registry with a few images is started on a free port, Chromium signs in and
photographs the repositories, a repository, an image and the registry page.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.registry.conftest import OCI_MANIFEST
from tests.registry.teams import basic

from .conftest import USERS, open_browser, start_registry
from .images import push_image, push_index, push_referrer

REPO = Path(__file__).resolve().parents[2]
SHOTS = {"repositories.png": "/ui/", "repository.png": "/ui/repositories/team/api",
         "image.png": "/ui/images/team/api:1.4.2", "registry.png": "/ui/registry"}


def fill(c) -> None:
    api = {}
    for tag in ("1.4.0", "1.4.1", "1.4.2"):
        api[tag] = push_image(c, "team/api", tag, seed=tag, labels={
            "org.opencontainers.image.source": "https://git.example.invalid/team/api",
            "org.opencontainers.image.version": tag, "maintainer": "platform team"})
    c.put_manifest("team/api", "latest", c.request("GET", f"/v2/team/api/manifests/{api['1.4.2'].digest}",
                                                     headers={"Accept": OCI_MANIFEST}).body)
    push_referrer(c, "team/api", api["1.4.2"], "application/spdx+json", {"org.opencontainers.image.created": "2026-01-02"})
    push_referrer(c, "team/api", api["1.4.2"], "application/vnd.dev.cosign.artifact.sig.v1+json",
                  {"dev.sigstore.cosign/signature": "MEUCIQDx..."})
    push_index(c, "team/web", "2.0")
    push_index(c, "team/web", "2.1")
    for name, tags in (("library/alpine", ("3.19", "3.20", "latest")), ("ci/builder", ("main-1",)),
                       ("public/hello", ("latest",)), ("team/worker", ("v7", "v8"))):
        for tag in tags:
            push_image(c, name, tag, seed=name + tag, layers=1)


def main(dest: str) -> int:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soko-ui-shots-") as tmp:
        proc = start_registry(Path(tmp))
        try:
            c = proc.client(auth=basic("alice", USERS["alice"]))
            fill(c)
            r = c.request("POST", "/v2/team/api/blobs/uploads/")  # an upload in progress
            c.request("PATCH", r.header("Location"), body=b"x" * 2_400_000,
                      headers={"Content-Type": "application/octet-stream"})
            c.push_blob("team/api", b"a layer nothing refers to\n" * 4000)  # for gc to free
            c.close()
            subprocess.run([sys.executable, "-m", "soko", "--root", str(Path(tmp) / "store"), "gc", "--registry",
                            str(Path(tmp) / "root"), "--grace", "0"], check=True, capture_output=True, cwd=REPO)
            for b in open_browser(Path(tmp), proc.url):
                b.log_in("alice", USERS["alice"])
                for name, path in SHOTS.items():
                    b.open(path)
                    height = b.driver.execute_script("return document.documentElement.scrollHeight")
                    b.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                             {"width": 1200, "height": min(height, 2400), "deviceScaleFactor": 1,
                                              "mobile": False})
                    b.driver.save_screenshot(str(out / name))
                    b.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
                    print(out / name)
        finally:
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "docs" / "ui")))
