"""Digests as the OCI image-spec defines them: `algorithm ":" encoded`.

Digests travel through soko as plain strings; `parse` validates one and
splits it. Only sha256 and sha512 are accepted (the registered algorithms).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

from .errors import DigestError, DigestMismatch

# The grammar from image-spec descriptor.md, matched whole (`$` would let a
# trailing newline through, into blob paths).
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_ENCODED_RE = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}
ALGORITHMS = tuple(_ENCODED_RE)
CHUNK = 1 << 20
SMALL = 1 << 20  # of_bytes below this hashes without OpenSSL (see _small)


@dataclass(frozen=True)
class Digest:
    """An OCI digest, `algorithm:encoded`, checked when parsed."""
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def parse(digest: str) -> Digest:
    """Validate `digest` and return its parts; DigestError names what is wrong."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise DigestError(f"invalid digest {digest!r}")
    algorithm, encoded = digest.split(":", 1)
    pattern = _ENCODED_RE.get(algorithm)
    if pattern is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if not pattern.fullmatch(encoded):
        raise DigestError(f"invalid {algorithm} digest {digest!r}")
    return Digest(algorithm, encoded)


def is_valid(digest: str) -> bool:
    try:
        parse(digest)
        return True
    except DigestError:
        return False


def hasher(algorithm: str = "sha256"):
    if algorithm not in _ENCODED_RE:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    import hashlib  # OpenSSL's, with the CPU's SHA instructions: for blobs of any size

    return hashlib.new(algorithm)


def _small(algorithm: str):
    """A hash object for a few kilobytes from CPython's own implementation, or None.

    Importing hashlib loads and initializes OpenSSL (~2 ms here): a tenth of what `soko run`
    spends before its container starts, where all it hashes is a manifest, a config and a
    seccomp cache key."""
    try:
        if algorithm == "sha256":
            from _sha256 import sha256 as new  # CPython 3.11 (_sha2 from 3.12)
        else:
            from _sha512 import sha512 as new
    except ImportError:
        try:
            from _sha2 import sha256, sha512  # type: ignore[import-not-found]
        except ImportError:
            return None
        new = sha256 if algorithm == "sha256" else sha512
    return new()


def of_bytes(data: bytes, algorithm: str = "sha256") -> str:
    h = (_small(algorithm) if len(data) < SMALL and algorithm in _ENCODED_RE else None) or hasher(algorithm)
    h.update(data)
    return f"{algorithm}:{h.hexdigest()}"


def of_file(f: BinaryIO, algorithm: str = "sha256") -> tuple[str, int]:
    """Digest and size of what remains in an open binary file."""
    h = hasher(algorithm)
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
        size += n
    return f"{algorithm}:{h.hexdigest()}", size


def of_path(path, algorithm: str = "sha256") -> tuple[str, int]:
    with open(path, "rb") as f:
        return of_file(f, algorithm)


class DigestingReader:
    """Wraps a binary stream, hashing what is read through it, so a consumer
    (tar reader, decompressor) and the digest check share one pass."""

    def __init__(self, raw: BinaryIO, algorithm: str = "sha256"):
        self.raw = raw
        self.algorithm = algorithm
        self._h = hasher(algorithm)
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self._h.update(data)
            self.size += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"

    def verify(self, expected: str, what: str = "content") -> None:
        self.drain()
        if self.digest != expected:
            raise DigestMismatch(expected, self.digest, what)
