"""Tar archives for the tests, hostile and broken ones included: the one place that builds them."""
from __future__ import annotations

import gzip as gz
import io
import tarfile
from pathlib import Path


def make_tar(entries: list[tuple], *, gzip: bool = False, mtime: int = 0, uid: int = 0, gid: int = 0,
             parents: bool = False) -> bytes:
    """A tar built entry by entry, exactly as given (names are not cleaned):

    ("file", name[, data (bytes or str)[, mode]]), ("dir", name[, mode]),
    ("symlink", name, target), ("hardlink", name, target),
    ("xattr-file", name, pax headers). `parents` adds missing parent
    directories (0755) before an entry; `gzip` compresses deterministically."""
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add(ti: tarfile.TarInfo, data: bytes | None = None) -> None:
            ti.mtime, ti.uid, ti.gid = mtime, uid, gid
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
            seen.add(ti.name.rstrip("/"))

        for kind, name, *rest in entries:
            if parents:
                parts = name.strip("/").split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in seen:
                        ti = tarfile.TarInfo(d)
                        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                        add(ti)
            ti = tarfile.TarInfo(name)
            if kind == "file":
                data = rest[0] if rest else b""
                data = data.encode() if isinstance(data, str) else data
                ti.size, ti.mode = len(data), rest[1] if len(rest) > 1 else 0o644
                add(ti, data)
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, rest[0] if rest else 0o755
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, rest[0], 0o777
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, rest[0]
            elif kind == "xattr-file":
                ti.pax_headers, ti.mode = rest[0], 0o644
            else:
                raise ValueError(f"unknown tar entry kind {kind!r}")
            add(ti)
    data = buf.getvalue()
    return gz.compress(data, mtime=0) if gzip else data


def tar_of_dir(src: Path) -> bytes:
    """An uncompressed layer tar of a directory tree (owners, modes and symlinks kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(src.rglob("*")):
            ti = tf.gettarinfo(str(path), arcname=path.relative_to(src).as_posix())
            ti.uname = ti.gname = ""
            if ti.isreg():
                with open(path, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated_gzip(data: bytes) -> bytes:
    z = gz.compress(data)
    return z[: len(z) // 2]
