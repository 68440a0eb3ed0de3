"""Compression of layers and archives: gzip, zstd or none, told apart by magic bytes."""
from __future__ import annotations

import zlib

from .errors import LayerError


class PushDecompressor:
    """Feeds compressed chunks, returns decompressed ones (gzip, zstd or none)."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "gzip":
            self._d = zlib.decompressobj(wbits=31)
        elif kind == "zstd":
            import zstandard

            self._d = zstandard.ZstdDecompressor().decompressobj()
        else:
            self._d = None

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            return data
        try:
            out = self._d.decompress(data)
            if self.kind == "gzip":  # concatenated gzip members are valid gzip
                while self._d.eof and self._d.unused_data:
                    rest = self._d.unused_data
                    self._d = zlib.decompressobj(wbits=31)
                    out += self._d.decompress(rest)
            return out
        except Exception as e:  # zlib.error, zstd.ZstdError
            raise LayerError(f"corrupt {self.kind} stream: {e}") from None

    def finish(self) -> None:
        if self.kind == "gzip" and not self._d.eof:
            raise LayerError("truncated gzip stream")
        if self.kind == "zstd" and not self._d.eof:
            raise LayerError("truncated zstd stream")


def detect(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"
