"""What ADD has beyond COPY: remote URLs (with --checksum) and local tar
archives unpacked whatever their compression (gzip, bzip2, xz, zstd, none).

Whether a file is an archive is decided by its content, never its name: the
decompressed start must be a tar header with a valid checksum.
"""
from __future__ import annotations

import bz2
import email.utils
import lzma
import posixpath
import tarfile
import urllib.error
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
    digest: str           # of the content, now a blob in the store
    mtime: int | None     # from Last-Modified
    etag: str | None
    last_modified: str | None


def url_name(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    name = posixpath.basename(path.rstrip("/"))
    return name


def check_checksum(checksum: str | None) -> None:
    if checksum is not None and not (checksum.startswith("sha256:") and len(checksum) == 71):
        raise FetchError(f"invalid --checksum {checksum!r}: expected sha256:<64 hex digits>")


def fetch(url: str, blobs, checksum: str | None, etag: str | None = None,
          last_modified: str | None = None) -> Download | None:
    """Download `url` into the blob store, verifying `checksum` (`sha256:<hex>`) when given.
    With the validators of an earlier download, the request is conditional
    (If-None-Match, If-Modified-Since) and None means "not modified"."""
    check_checksum(checksum)
    headers = {"User-Agent": "soko-build"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT) as resp, blobs.writer() as w:
            while chunk := resp.read(1 << 20):
                w.write(chunk)
            digest = w.digest
            if checksum is not None and digest != checksum:
                w.abort()
                raise FetchError(f"ADD {url}: content digest {digest} does not match --checksum {checksum}")
            w.commit()
            modified = resp.headers.get("Last-Modified")
            new_etag = resp.headers.get("ETag")
    except urllib.error.HTTPError as e:
        if e.code == 304 and (etag or last_modified):
            return None
        raise FetchError(f"ADD {url}: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError) as e:
        raise FetchError(f"ADD {url}: {getattr(e, 'reason', None) or e}") from None
    mtime = None
    if modified:
        try:
            mtime = int(email.utils.parsedate_to_datetime(modified).timestamp())
        except (TypeError, ValueError):
            mtime = None
    return Download(digest, mtime, new_etag, modified)
