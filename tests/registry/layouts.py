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
    return write_image(dest, _layer_tar(), {"created": "2024-01-01T00:00:00Z",
                                            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                                            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "tests"}]},
                       tag)["manifest"]


def write_image(dest: Path, tar: bytes, config: dict, tag: str = "latest", level: int = 9) -> dict:
    """An OCI image layout at `dest` with one image: `tar` (gzipped) as its layer, `config`
    (architecture, os and rootfs added); returns the digests of manifest, config and layer, and
    the layer's bytes."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return f"sha256:{h}"

    layer = gzip.compress(tar, compresslevel=level, mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", **config,
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}},
                     sort_keys=True).encode()
    config_digest, layer_digest = put(cfg), put(layer)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": layer_digest, "size": len(layer)}]}).encode()
    digest = put(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return {"manifest": digest, "config": config_digest, "layer": layer_digest, "layer_bytes": layer}
