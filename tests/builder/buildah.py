"""Drive `buildah bud --layers --isolation chroot` in a private storage, and flatten images to trees.

Used by the differential test and the benchmark, so both run buildah the
same way: through tests.interop.tools.Containers (private storage root and
containers.conf, short run root under /run), so nothing touches the
machine's default containers storage.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.interop.tools import Containers, run

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                 "StopSignal")


class Buildah(Containers):
    """buildah in its own storage under `base`, building with chroot isolation."""

    def __init__(self, base: Path, driver: str = "overlay"):
        base.mkdir(parents=True, exist_ok=True)
        self.base_dir = base
        super().__init__("buildah", base, driver, env={"BUILDAH_ISOLATION": "chroot", "STORAGE_DRIVER": driver})

    def load_oci_archive(self, archive: Path, name: str) -> None:
        """An image soko saved becomes `name` in buildah's storage (skopeo does the copy)."""
        run("skopeo", "copy", "--quiet", f"oci-archive:{archive}", self.storage(name), timeout=600)

    def bud(self, context: Path, tag: str, build_args: dict[str, str] | None = None,
            extra: list[str] | None = None) -> str:
        args = ["bud", "--layers", "--isolation", "chroot", "-t", tag]
        for k, v in (build_args or {}).items():
            args += ["--build-arg", f"{k}={v}"]
        return self(*args, *(extra or []), str(context), timeout=900)

    def export(self, tag: str, dest: Path) -> Path:
        """The image as an OCI layout directory."""
        if dest.exists():
            shutil.rmtree(dest)
        self("push", "--quiet", tag, f"oci:{dest}", timeout=900)
        return dest

    def cleanup(self) -> None:
        subprocess.run([*self.base, "rm", "--all"], capture_output=True, env={**os.environ, **self.env})
        super().cleanup()
        subprocess.run(["umount", "-R", str(self.root / "overlay")], capture_output=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def oci_layout_image(layout: Path) -> tuple[dict, list[Path]]:
    """(config, layer blob paths bottom first) of the only image in an OCI layout directory."""
    def blob(d: str) -> Path:
        alg, enc = d.split(":", 1)
        return layout / "blobs" / alg / enc

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    return config, [blob(d["digest"]) for d in manifest["layers"]]


def flatten(layer_paths: list[Path], dest: Path) -> Path:
    """Apply layers (any compression) onto an empty directory, whiteouts honoured."""
    from storage.layers import apply_layer

    dest.mkdir(parents=True, exist_ok=True)
    for p in layer_paths:
        with open(p, "rb") as f:
            apply_layer(f, dest, atomic=False)
    return dest


def flatten_soko(store, ref: str, dest: Path) -> tuple[dict, Path]:
    img = store.resolve(ref)
    paths = [store.blobs.path(d.digest) for d in img.manifest.layers]
    return img.config.data, flatten(paths, dest)


def tree(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, content digest or link target) for everything under root."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = "/" + str(p.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = st.st_rdev
            else:
                what = None
            out[rel] = (oct(kind), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, what)
    return out


def runtime_config(config: dict) -> dict:
    """The fields the differential test compares, with buildah's own label dropped."""
    cfg = config.get("config") or {}
    out = {k: cfg.get(k) for k in CONFIG_FIELDS}
    labels = dict(out["Labels"] or {})
    labels.pop("io.buildah.version", None)
    out["Labels"] = labels or None
    for k in ("ExposedPorts", "Volumes"):
        out[k] = out[k] or None
    out["WorkingDir"] = out["WorkingDir"] or None
    out["User"] = out["User"] or None
    return out
