"""Images worth looking at, pushed through the registry's API: a config with
history, env, entrypoint, ports and labels; real gzip layers; a two-platform
index; an SBOM and a signature that refer to an image."""
from __future__ import annotations

import gzip
import io
import json
import queue
import tarfile
from dataclasses import dataclass

from tests.registry.conftest import (Client, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha256)

HOSTILE = "<script>alert(1)</script>"


@dataclass
class Pushed:
    repo: str
    tag: str | None
    digest: str
    layer_sizes: list[int]


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer blob and its diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), sha256(raw)


def push_image(c: Client, repo: str, tag: str | None, *, arch: str = "amd64", labels: dict | None = None,
               env: list[str] | None = None, history: list[tuple[str, bool]] | None = None,
               layers: int = 2, seed: str = "", annotations: dict | None = None,
               subject: dict | None = None) -> Pushed:
    """An image whose history names the step that made each layer; `history`:
    (created_by, empty_layer) pairs; by default ADD, ENV, RUN."""
    history = history or [("/bin/sh -c #(nop) ADD file:rootfs in / ", False),
                          ('/bin/sh -c #(nop)  ENV APP_MODE=production', True),
                          ("/bin/sh -c apk add --no-cache curl && rm -rf /var/cache/*", False)][: layers + 1]
    blobs, diff_ids = [], []
    made = [h for h in history if not h[1]]
    for i in range(len(made)):
        blob, diff_id = layer({f"layer{i}/file.txt": f"{seed} {repo} layer {i} {arch}\n".encode() * (200 * (i + 1))})
        blobs.append(blob)
        diff_ids.append(diff_id)
    config = {
        "architecture": arch, "os": "linux", "created": "2026-01-02T03:04:05Z", "author": "soko tests",
        "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "APP_MODE=production"],
                   "Entrypoint": ["/usr/bin/app"], "Cmd": ["--listen", ":8080"], "WorkingDir": "/srv",
                   "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}},
                   "Labels": labels if labels is not None else {"org.opencontainers.image.source":
                                                                "https://example.invalid/app"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-02T03:04:05Z", "created_by": by, **({"empty_layer": True} if e else {})}
                    for by, e in history],
    }
    cfg = json.dumps(config).encode()
    descs = [{"mediaType": OCI_LAYER, "digest": c.push_blob(repo, b), "size": len(b)} for b in blobs]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": c.push_blob(repo, cfg), "size": len(cfg)},
                "layers": descs}
    if annotations:
        manifest["annotations"] = annotations
    if subject:
        manifest["subject"] = subject
    raw = json.dumps(manifest, indent=2).encode()
    digest = sha256(raw)
    r = c.put_manifest(repo, tag or digest, raw)
    assert r.status == 201, (r.status, r.body)
    return Pushed(repo, tag, digest, [len(b) for b in blobs])


def push_index(c: Client, repo: str, tag: str, archs: tuple[str, ...] = ("amd64", "arm64")) -> Pushed:
    children = [push_image(c, repo, None, arch=a, seed=tag) for a in archs]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": ch.digest,
         "size": len(c.request("GET", f"/v2/{repo}/manifests/{ch.digest}",
                               headers={"Accept": OCI_MANIFEST}).body),
         "platform": {"os": "linux", "architecture": a, **({"variant": "v8"} if a == "arm64" else {})}}
        for ch, a in zip(children, archs)]}
    raw = json.dumps(index).encode()
    r = c.put_manifest(repo, tag, raw, OCI_INDEX)
    assert r.status == 201, (r.status, r.body)
    return Pushed(repo, tag, sha256(raw), [])


def push_referrer(c: Client, repo: str, subject: Pushed, artifact_type: str, annotations: dict) -> str:
    """An artifact manifest (an SBOM, a signature) whose subject is `subject`."""
    empty = b"{}"
    body = json.dumps({"spdxVersion": "SPDX-2.3", "name": repo}).encode()
    raw_subject = c.request("GET", f"/v2/{repo}/manifests/{subject.digest}", headers={"Accept": OCI_MANIFEST}).body
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": c.push_blob(repo, empty),
                           "size": 2},
                "layers": [{"mediaType": "application/spdx+json", "digest": c.push_blob(repo, body),
                            "size": len(body)}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(raw_subject)},
                "annotations": annotations}
    raw = json.dumps(manifest).encode()
    r = c.put_manifest(repo, sha256(raw), raw)
    assert r.status == 201, (r.status, r.body)
    return sha256(raw)


def many_repositories(clients: list[Client], n: int, prefix: str = "fleet") -> list[str]:
    """`n` repositories `prefix/svc-NNNN`, each with a tag or three: one image's blobs
    pushed once, then mounted into every repository (as a CI fleet shares a base)."""
    from concurrent.futures import ThreadPoolExecutor

    first = clients[0]
    base = push_image(first, f"{prefix}/svc-0000", "v1", layers=1)
    raw = first.request("GET", f"/v2/{base.repo}/manifests/{base.digest}", headers={"Accept": OCI_MANIFEST}).body
    blobs = [d["digest"] for d in [json.loads(raw)["config"], *json.loads(raw)["layers"]]]
    names = [f"{prefix}/svc-{i:04d}" for i in range(n)]

    free = queue.SimpleQueue()  # one client per thread at a time: http.client is not thread-safe
    for c in clients:
        free.put(c)

    def fill(job: tuple[int, str]) -> None:
        c = free.get()
        try:
            _fill(c, *job)
        finally:
            free.put(c)

    def _fill(c: Client, i: int, name: str) -> None:
        if name != base.repo:
            for d in blobs:
                r = c.request("POST", f"/v2/{name}/blobs/uploads/?mount={d}&from={base.repo}")
                assert r.status == 201, (r.status, r.body)
        for tag in ("v1", "v2", "latest")[: 1 + i % 3]:
            r = c.put_manifest(name, tag, raw)
            assert r.status == 201, (r.status, r.body)

    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(fill, [(i, n) for i, n in enumerate(names)]))
    return names
