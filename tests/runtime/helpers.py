"""Test helpers: a small busybox root made here, and images built from it in a store."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "app:x:1000:1000:app:/home/app:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"


def busybox_tree(root: Path) -> Path:
    """/bin/busybox plus its applet links, /etc/passwd and /etc/group."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    bb = root / "bin" / "busybox"
    if not bb.exists():
        with open("/bin/busybox", "rb") as fi, open(bb, "wb") as fo:
            fo.write(fi.read())
        bb.chmod(0o755)
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", root / "bin" / a)
    for d in ("etc", "tmp", "root", "home/app", "proc", "sys", "dev", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    os.chown(root / "home" / "app", 1000, 1000)
    return root


def add_image(store, layers: list[bytes], config: dict | None = None, tag: str | None = None):
    """Store uncompressed layer tars as an image (bottom layer first); returns the Image."""
    from storage import mediatypes as mt
    from storage.model import Descriptor, ImageConfig

    cfg = ImageConfig.new()
    cfg.config.update(config or {})
    descs = []
    for data in layers:
        digest = store.blobs.put_bytes(data)
        store.record_layer(digest, digest, "none", len(data))
        cfg.diff_ids.append(digest)
        cfg.history.append({"created_by": "test"})
        descs.append(Descriptor(mt.OCI_LAYER, digest, len(data)))
    m = store.commit(cfg, descs)
    if tag:
        store.tag(tag, m.digest)
    return store.image(m.digest)
