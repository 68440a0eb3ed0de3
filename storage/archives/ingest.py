"""Taking blobs into the store from archive members, verified in one pass,
with rollback: blobs an aborted load added are removed again, so a failed
load leaves the store as it was."""
from __future__ import annotations

from typing import BinaryIO

from .. import compression, digests
from ..blobs import BlobStore
from ..errors import DigestMismatch


class Ingest:
    """Blobs added during one load; `rollback()` removes those that were new."""

    def __init__(self, blobs: BlobStore):
        self.blobs = blobs
        self.added: list[str] = []

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        existed = self.blobs.has(expected or digests.of_bytes(data))
        d = self.blobs.put_bytes(data, expected)
        if not existed and d not in self.added:
            self.added.append(d)
        return d

    def put_layer(self, stream: BinaryIO, expected: str | None = None,
                  diff_id: str | None = None) -> tuple[str, str, str, int]:
        """Store a layer as it comes; returns (blob digest, diff_id,
        compression, size). The diff_id (digest of the uncompressed tar) is
        computed in the same pass and checked against `diff_id` when given."""
        w = self.blobs.writer()
        try:
            tee = _Tee(stream, w.write)
            kind, src = compression.sniff(tee)
            diff = digests.hasher()
            for chunk in compression.iter_decompressed(src, kind):
                diff.update(chunk)
            while tee.read(digests.CHUNK):  # anything the decompressor did not need
                pass
            actual_diff = f"sha256:{diff.hexdigest()}"
            if diff_id is not None and actual_diff != diff_id:
                raise DigestMismatch(diff_id, actual_diff, "layer diff_id")
            existed = self.blobs.has(w.digest)
            size = w.offset
            d = w.commit(expected)
            if not existed and d not in self.added:
                self.added.append(d)
            return d, actual_diff, kind, size
        finally:
            w.close()

    def rollback(self) -> None:
        for d in self.added:
            self.blobs.delete(d)
        self.added.clear()


class _Tee:
    """A reader that hands every byte it reads to `sink` as well."""

    def __init__(self, raw: BinaryIO, sink):
        self.raw, self.sink = raw, sink

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.sink(data)
        return data
