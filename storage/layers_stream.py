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


class LayerStream:
    """The uncompressed bytes of a layer blob, as an iterator of chunks.

    A thread reads `raw` (hashing it: `raw.digest`), detects the compression
    and decompresses; another hashes the output (`diff`). `close` stops both,
    also when the consumer gave up half way."""

    def __init__(self, raw: BinaryIO):
        self.raw = DigestingReader(raw)
        self.compression, src = comp.sniff(self.raw)
        self.diff = _Hasher()
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(src,), name="soko-unpack",
                                        daemon=True)
        self._thread.start()

    def _run(self, src: BinaryIO) -> None:
        try:
            for chunk in comp.iter_decompressed(src, self.compression):
                self.diff.put(chunk)
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as e:
            self._put(_Failure(e))
        finally:
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
        return "sha256:" + self.diff.hash.hexdigest()


@dataclass(frozen=True)
class LayerDigests:
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
                        uncompressed_size=stream.diff.size, compression=stream.compression)
