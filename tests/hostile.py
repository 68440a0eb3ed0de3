"""Builders of hostile and broken archives for the tests."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path


def tar_bytes(entries: list[tuple]) -> bytes:
    """entries: ("file", name, data) | ("symlink", name, target) | ("hardlink", name, target) | ("dir", name)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            if kind == "file":
                data = rest[0]
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            tar.addfile(ti)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated_gzip(data: bytes) -> bytes:
    z = gzip.compress(data)
    return z[: len(z) // 2]
