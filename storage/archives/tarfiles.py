"""Tar plumbing shared by the archive formats: deterministic writing and
random-access reading of possibly compressed archives."""
from __future__ import annotations

import io
import json
import posixpath
import os
import tarfile
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .. import compression
from ..blobs import BlobStore
from ..errors import ArchiveError
from ..model import MAX_JSON


class ArchiveWriter:
    """Writes a tar whose bytes depend only on what is added: fixed owners,
    mode and mtime, entries in the order added, PAX format."""

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
        """Stop without the end-of-archive blocks or what is still buffered:
        a failed archive must not end like a whole one."""
        self.tar.fileobj.closed = True  # its _Stream would flush on garbage collection
        self.tar.closed = True


@contextmanager
def open_archive(source: Path | BinaryIO, scratch: BlobStore, name: str) -> Iterator[tarfile.TarFile]:
    """A random-access TarFile over `source`: a path, or a stream such as stdin.

    A plain tar that can seek is read in place. Anything else (gzip or zstd,
    or a pipe) is first spooled, decompressed, into an anonymous file in the
    store's private ingest area, on the store's disk rather than in memory;
    the file has no name, so it is gone when closed, even if soko is killed."""
    with ExitStack() as stack:
        raw = source if hasattr(source, "read") else stack.enter_context(open(source, "rb"))
        start = raw.tell() if raw.seekable() else None  # type: ignore[union-attr]
        kind, stream = compression.sniff(raw)  # type: ignore[arg-type]
        if kind == compression.NONE and start is not None:
            raw.seek(start)  # type: ignore[union-attr]
            tar_bytes: BinaryIO = raw  # type: ignore[assignment]
        else:
            tar_bytes = stack.enter_context(tempfile.TemporaryFile(dir=scratch.ingest_dir))
            for chunk in compression.iter_decompressed(stream, kind):
                tar_bytes.write(chunk)
            tar_bytes.seek(0)
        try:
            tar = stack.enter_context(tarfile.open(fileobj=tar_bytes, mode="r:"))
        except tarfile.TarError as e:
            raise ArchiveError(f"{name}: not a tar archive ({e})") from None
        yield tar


def members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by normalized name (no leading `./`). A symbolic or hard link to a
    regular member of the archive names that member too: `docker save` of images that share a
    layer writes it once and links the other `<id>/layer.tar` to it."""
    out: dict[str, tarfile.TarInfo] = {}
    links: dict[str, str] = {}
    for m in tar.getmembers():
        name = m.name[2:] if m.name.startswith("./") else m.name
        if m.isfile():
            out[name] = m
        elif m.issym():
            links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
        elif m.islnk():
            links[name] = posixpath.normpath(m.linkname[2:] if m.linkname.startswith("./") else m.linkname)
    for name, target in links.items():
        for _ in range(8):  # a chain of links, never a loop
            if target in out or target not in links:
                break
            target = links[target]
        if target in out and name not in out:
            out[name] = out[target]
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
