#!/usr/bin/env python3
"""Make tests/registry/data/root-<commit>.json: a registry root written by an
older soko, for test_metadata_upgrade.py.

    git archive COMMIT | tar -x -C /tmp/old-soko
    python tests/registry/data/make_old_root.py /tmp/old-soko COMMIT

runs that tree's `python -m registry.server` on a fresh root, pushes a bit of
everything through its API (tags, an index, a referrer, a blob of no manifest,
an open upload session), runs that tree's garbage collection once, then
writes the root's SQLite database as SQL text and every blob file (base64)
into one JSON file. Its contents are fixed (no random seeds) except times.
"""
from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def request(base: str, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Content-Type": ctype} if ctype else {})
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers


def push_blob(base: str, repo: str, data: bytes) -> str:
    digest = sha256(data)
    request(base, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data, "application/octet-stream")
    return digest


def push_manifest(base: str, repo: str, ref: str, doc: dict, media_type: str = OCI_MANIFEST) -> str:
    raw = json.dumps(doc, sort_keys=True).encode()
    request(base, "PUT", f"/v2/{repo}/manifests/{ref}", raw, media_type)
    return sha256(raw)


def image(base: str, repo: str, seed: str) -> tuple[dict, int]:
    layer, cfg = f"layer of {seed}".encode(), json.dumps({"seed": seed}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": push_blob(base, repo, cfg),
                      "size": len(cfg)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": push_blob(base, repo, layer), "size": len(layer)}]}
    return doc, len(json.dumps(doc, sort_keys=True).encode())


def main() -> None:
    tree, commit = Path(sys.argv[1]).resolve(), sys.argv[2]
    out = Path(__file__).resolve().parent / f"root-{commit}.json"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        proc = subprocess.Popen([sys.executable, "-m", "registry.server", "--addr", "127.0.0.1:0", "--root", str(root)],
                                cwd=tree, stdout=subprocess.PIPE, env={"PYTHONPATH": str(tree)})
        try:
            base = proc.stdout.readline().decode().split()[-1]
            doc, size = image(base, "team/app", "one")
            one = push_manifest(base, "team/app", "v1", doc)
            request(base, "PUT", "/v2/team/app/manifests/latest", json.dumps(doc, sort_keys=True).encode(),
                    OCI_MANIFEST)
            doc2, size2 = image(base, "team/app", "two")
            two = push_manifest(base, "team/app", "v2", doc2)
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": one, "size": size, "platform": {"os": "linux",
                                                                                       "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": two, "size": size2, "platform": {"os": "linux",
                                                                                        "architecture": "arm64"}}]}
            push_manifest(base, "team/app", "multi", index, OCI_INDEX)
            empty = push_blob(base, "team/app", b"{}")
            push_manifest(base, "team/app", sha256(json.dumps(sig := {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
                "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": one, "size": size},
                "annotations": {"org.example": "yes"}}, sort_keys=True).encode()), sig)
            other, _ = image(base, "library/busybox", "three")
            push_manifest(base, "library/busybox", "1.36", other)
            push_blob(base, "library/busybox", b"a blob no manifest uses")
            status, headers = request(base, "POST", "/v2/team/app/blobs/uploads/")
            request(base, "PATCH", headers["Location"], b"half an upload", "application/octet-stream")
        finally:
            proc.terminate()
            proc.wait()
        subprocess.run([sys.executable, "-c", "import sys; from registry.server.gc import collect; "
                        "collect(sys.argv[1], grace=3600)", str(root)], cwd=tree, check=True,
                       env={"PYTHONPATH": str(tree)})
        db = sqlite3.connect(root / "metadata.db")
        sql = list(db.iterdump())
        db.close()
        blobs = {f"{p.parent.name}:{p.name}": base64.b64encode(p.read_bytes()).decode()
                 for p in sorted((root / "blobs").glob("*/*"))}
        ingest = {p.name: base64.b64encode(p.read_bytes()).decode() for p in sorted((root / "ingest").glob("upload-*"))}
    out.write_text(json.dumps({"commit": commit, "sql": sql, "blobs": blobs, "ingest": ingest}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
