"""Real third-party clients for the registry interop tests, and a tiny
busybox image written by hand as an OCI layout directory."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

BUSYBOX = Path("/bin/busybox")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def run(*args, env: dict | None = None, timeout: float = 300) -> str:
    p = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {p.returncode}:\n"
                             f"{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


class Containers:
    """podman or buildah as TESTING.md says they work here (runc, no default
    ulimits via a private containers.conf), with private storage so tests
    never touch the machine's images or its /etc."""

    def __init__(self, tool: str, tmp: Path):
        need_tool(tool)
        need_tool("runc")
        conf = tmp / f"{tool}-containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = {"CONTAINERS_CONF": str(conf)}
        self.runroot = tempfile.mkdtemp(prefix=f"{tool[:2]}-", dir="/run")
        self.base = [tool, "--root", str(tmp / f"{tool}-root"), "--runroot", self.runroot,
                     "--storage-driver", "vfs"]
        if tool == "podman":
            self.base += ["--runtime", "runc"]

    def __call__(self, *args, **kw) -> str:
        return run(*self.base, *args, env=self.env, **kw)

    def cleanup(self) -> None:
        reset = [*self.base, "system", "reset", "--force"] if self.base[0] == "podman" else [*self.base, "rmi",
                                                                                               "--all", "--force"]
        subprocess.run(reset, capture_output=True, env={**os.environ, **self.env})
        shutil.rmtree(self.runroot, ignore_errors=True)


def _layer_tar() -> bytes:
    """bin/busybox plus the applets a test runs, deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "echo", "cat", "ls"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(info)
    return buf.getvalue()


def busybox_layout(dest: Path, tag: str = "latest") -> str:
    """Write an OCI image layout with a busybox image; returns its manifest digest."""
    if not BUSYBOX.is_file():
        pytest.skip("busybox-static is not installed")
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
