"""Taking blobs into the store from archive members, verified in one pass,
with rollback: blobs an aborted load added are removed again, so a failed
load leaves the store as it was."""
from __future__ import annotations

from typing import BinaryIO, Callable, Iterator

from .. import digests
from ..blobs import BlobStore
from ..errors import DigestMismatch
from ..layers_stream import LayerStream


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

    def put_layer(self, stream: BinaryIO, expected: str | None = None, diff_id: str | None = None,
                  consume: Callable[[BinaryIO], object] | None = None) -> tuple[str, str, str, int]:
        """Store a layer as it comes; returns (blob digest, diff_id,
        compression, size). One pass: the raw bytes go to the blob writer
        while `LayerStream` decompresses and hashes them on its threads; the
        diff_id is checked against `diff_id` when given, and `consume` (if
        any) reads the uncompressed tar on the way, e.g. to validate entries."""
        w = self.blobs.writer()
        try:
            layer = LayerStream(_Tee(stream, w.write))
            try:
                chunks = iter(layer)
                if consume is not None:
                    consume(_ChunkReader(chunks))
                for _ in chunks:  # whatever the consumer did not need (tar padding)
                    pass
            finally:
                layer.close()
            if diff_id is not None and layer.diff_id != diff_id:
                raise DigestMismatch(diff_id, layer.diff_id, "layer diff_id")
            existed = self.blobs.has(w.digest)
            size = w.offset
            d = w.commit(expected)
            if not existed and d not in self.added:
                self.added.append(d)
            return d, layer.diff_id, layer.compression, size
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


class _ChunkReader:
    """A read()-able view of an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buf = chunks, b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buf += chunk
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out
