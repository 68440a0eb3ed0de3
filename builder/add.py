"""What ADD has beyond COPY: remote URLs (with --checksum) and local tar
archives unpacked whatever their compression (gzip, bzip2, xz, zstd, none).

Whether a file is an archive is decided by its content, never its name: the
decompressed start must be a tar header with a valid checksum.
"""
from __future__ import annotations

import bz2
import email.utils
import hashlib
import lzma
import os
import posixpath
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from .errors import FetchError

MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
FETCH_TIMEOUT = 60


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def is_git(src: str) -> bool:
    return src.startswith("git@") or src.endswith(".git") or ".git#" in src


def _compression(head: bytes) -> str:
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    return "none"


def open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes with any supported compression removed."""
    f = open(path, "rb")
    kind = _compression(f.read(6))
    f.seek(0)
    if kind == "gzip":
        import gzip
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(f)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(f)  # type: ignore[return-value]
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]
    return f


def is_archive(path: Path) -> bool:
    """A tar archive (possibly compressed)? Only a valid first header counts."""
    try:
        with open_decompressed(path) as f:
            block = f.read(512)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError):
        return False
    if len(block) < 512 or block == bytes(512):
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return False
    return True


def unpack(path: Path, target: Path) -> None:
    """Extract the archive at `path` into `target` (tar -x semantics, nothing outside)."""
    from storage.errors import StorageError
    from storage.layers import apply_layer

    with open_decompressed(path) as f:
        try:
            apply_layer(f, target, atomic=False)
        except StorageError as e:
            raise FetchError(f"unpacking {path.name}: {e}") from None


@dataclass
class Download:
    path: Path
    digest: str
    mtime: int | None     # from Last-Modified
    name: str             # file name from the URL path


def url_name(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    name = posixpath.basename(path.rstrip("/"))
    return name


def fetch(url: str, dest: Path, checksum: str | None) -> Download:
    """Download `url` to `dest`, verifying `checksum` (`sha256:<hex>`) when given."""
    if checksum is not None and not (checksum.startswith("sha256:") and len(checksum) == 71):
        raise FetchError(f"invalid --checksum {checksum!r}: expected sha256:<64 hex digits>")
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "soko-build"})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT) as resp, open(dest, "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = resp.headers.get("Last-Modified")
    except (OSError, ValueError) as e:
        raise FetchError(f"ADD {url}: {getattr(e, 'reason', None) or e}") from None
    digest = "sha256:" + h.hexdigest()
    if checksum is not None and digest != checksum:
        os.unlink(dest)
        raise FetchError(f"ADD {url}: content digest {digest} does not match --checksum {checksum}")
    mtime = None
    if modified:
        try:
            mtime = int(email.utils.parsedate_to_datetime(modified).timestamp())
        except (TypeError, ValueError):
            mtime = None
    return Download(dest, digest, mtime, url_name(url))
