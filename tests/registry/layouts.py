"""A tiny busybox image written by hand as an OCI layout directory (for the registry interop tests)."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from tests.interop.tools import need_tool
from tests.tarballs import make_tar

BUSYBOX = Path("/bin/busybox")


def _layer_tar() -> bytes:
    """bin/busybox plus the applets a test runs, deterministic."""
    return make_tar([("dir", "bin"), ("dir", "tmp"), ("dir", "etc"),
                     ("file", "bin/busybox", BUSYBOX.read_bytes(), 0o755),
                     *[("symlink", f"bin/{applet}", "busybox") for applet in ("sh", "echo", "cat", "ls")]])


def busybox_layout(dest: Path, tag: str = "latest") -> str:
    """Write an OCI image layout with a busybox image; returns its manifest digest."""
    need_tool("busybox")  # busybox-static
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return f"sha256:{h}"

    tar = _layer_tar()
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                         "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
                         "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "tests"}]},
                        sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": put(layer), "size": len(layer)}]}).encode()
    digest = put(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return digest
