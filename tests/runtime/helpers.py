"""Test helpers: a small busybox root made here, and images built from it in a store."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
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
