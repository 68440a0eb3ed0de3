"""Tar plumbing shared by the archive formats: deterministic writing and
random-access reading of possibly compressed archives."""
from __future__ import annotations

import io
import json
import os
import tarfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator

from .. import compression
from ..blobs import BlobStore
from ..errors import ArchiveError
from ..model import MAX_JSON


class ArchiveWriter:
    """Writes a tar whose bytes depend only on what is added: fixed owners,
    mode and mtime, entries in the order added, PAX format. Use it as a
    context manager: it closes the archive, or after a failure aborts it."""

    def __init__(self, out: BinaryIO):
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _info(self, name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mtime, ti.uid, ti.gid = size, kind, 0, 0, 0
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.uname = ti.gname = ""
        return ti

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, kind=tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parents(name)
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_json(self, name: str, obj) -> None:
        self.add_bytes(name, json.dumps(obj, separators=(",", ":")).encode())

    def add_file(self, name: str, f: BinaryIO) -> None:
        """An open regular file, whole."""
        self._parents(name)
        self.tar.addfile(self._info(name, os.fstat(f.fileno()).st_size), f)

    def close(self) -> None:
        self.tar.close()

    def abort(self) -> None:
        """Stop after a failure, while the output is still open: what is
        buffered goes out but no end-of-archive blocks (a reader sees a
        truncated tar, never a complete one), and nothing is left for
        tarfile's finalizer to write later into a closed file (which
        printed an `Exception ignored in _Stream.__del__` traceback)."""
        self.tar.closed = True
        with suppress(OSError, ValueError):  # the output itself may be what failed
            self.tar.fileobj.close()

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextmanager
def open_archive(path: Path, scratch: BlobStore) -> Iterator[tarfile.TarFile]:
    """A random-access TarFile over `path`, decompressing it first (into the
    store's ingest area) when it is gzip or zstd."""
    tmp: Path | None = None
    try:
        with open(path, "rb") as f:
            kind = compression.detect(f.read(8))
            if kind != "none":
                f.seek(0)
                tmp = scratch.new_temp(".tar")
                with open(tmp, "wb") as out:
                    for chunk in compression.iter_decompressed(f, kind):
                        out.write(chunk)
        try:
            tar = tarfile.open(tmp or path, "r:")
        except tarfile.TarError as e:
            raise ArchiveError(f"{path}: not a tar archive ({e})") from None
        with tar:
            yield tar
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by normalized name (no leading `./`)."""
    out = {}
    for m in tar.getmembers():
        if m.isfile():
            name = m.name[2:] if m.name.startswith("./") else m.name
            out[name] = m
    return out


def read_small(tar: tarfile.TarFile, m: tarfile.TarInfo, what: str) -> bytes:
    """A member that holds JSON (a manifest, config, index), bounded by MAX_JSON."""
    if m.size > MAX_JSON:
        raise ArchiveError(f"{what}: {m.name} is implausibly large for JSON ({m.size} bytes)")
    f = tar.extractfile(m)
    assert f is not None
    return f.read()


def read_json(tar: tarfile.TarFile, index: dict[str, tarfile.TarInfo], name: str, what: str):
    m = index.get(name)
    if m is None:
        raise ArchiveError(f"{what}: {name} is missing")
    try:
        return json.loads(read_small(tar, m, what))
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{what}: {name} is not valid JSON: {e}") from None
