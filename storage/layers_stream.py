"""Reading a layer blob on helper threads: the blob digest, decompression
and the uncompressed digest (diff_id) all happen off the consumer's thread,
in one pass over the bytes."""
from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from . import compression as comp
from .digests import DigestingReader

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Hasher:
    """sha256 on a thread of its own: with gzip the decompressing thread is
    the bottleneck, so the uncompressed digest must not run on it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self._q: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="soko-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            self.hash.update(chunk)
            self.size += len(chunk)

    def put(self, chunk: bytes) -> None:
        self._q.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


class _Counted:
    """A reader that counts what passes; its digest is the one it was given."""

    def __init__(self, raw: BinaryIO, digest: str):
        self._raw = raw
        self.digest = digest
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.size += len(data)
        return data


class LayerStream:
    """The uncompressed bytes of a layer blob, as an iterator of chunks.

    A thread reads `raw` (hashing it: `raw.digest`), detects the compression
    and decompresses; another hashes the output (`diff`). `close` stops both,
    also when the consumer gave up half way."""

    def __init__(self, raw: BinaryIO, stored_as: str | None = None, known_diff_id: str | None = None):
        """`stored_as`: the digest a blob store that verified the blob names it by. A compressed
        blob is then not hashed again (its diff_id still is, and that checks every byte of what
        it decompresses to); an uncompressed one is, its digest being its diff_id.
        `known_diff_id`: what a compressed blob is known to decompress to (a blob store's note,
        BlobStore.note_diff_id): its tar is then not hashed at all, the codec's checksum
        checking the bytes; `diff_id` is that."""
        self.compression, src = comp.sniff(raw)
        self.raw: DigestingReader | _Counted = (_Counted(src, stored_as) if stored_as and self.compression != comp.NONE
                                                else DigestingReader(src))
        src = self.raw
        # Uncompressed: the blob is the tar, one digest serves as both.
        self._known = known_diff_id if self.compression != comp.NONE else None
        self.diff = _Hasher() if self.compression != comp.NONE and self._known is None else None
        self._size = 0  # of the tar, when nothing hashes it
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(src,), name="soko-unpack",
                                        daemon=True)
        self._thread.start()

    def _run(self, src: BinaryIO) -> None:
        try:
            for chunk in comp.iter_decompressed(src, self.compression):
                if self.diff is not None:
                    self.diff.put(chunk)
                else:
                    self._size += len(chunk)
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as e:
            self._put(_Failure(e))
        finally:
            if self.diff is not None:
                self.diff.close()

    def _put(self, item: object) -> bool:
        while not self._stop:
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._stop = True
        self._thread.join()

    @property
    def diff_id(self) -> str:
        if self._known is not None:
            return self._known
        return self.raw.digest if self.diff is None else "sha256:" + self.diff.hash.hexdigest()

    @property
    def uncompressed_size(self) -> int:
        if self._known is not None:
            return self._size
        return self.raw.size if self.diff is None else self.diff.size


@dataclass(frozen=True)
class LayerDigests:
    """What reading a layer blob through found: its diff ID, its blob digest and sizes."""
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    compression: str


def digest_layer(raw: BinaryIO) -> LayerDigests:
    """Both digests of a layer blob in one pass, e.g. to learn the diff_id of
    a pulled or loaded layer. LayerError if the compression is damaged."""
    stream = LayerStream(raw)
    try:
        for _ in stream:
            pass
    finally:
        stream.close()
    return LayerDigests(diff_id=stream.diff_id, digest=stream.raw.digest, size=stream.raw.size,
                        uncompressed_size=stream.uncompressed_size,
                        compression=stream.compression)
