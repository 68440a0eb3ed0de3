"""Following a zstd stream's frames from their headers alone (RFC 8878), for the
decompressor (compression.py) that cannot say where they end: libzstd decodes large
pieces in C, this finds truncation, zero padding and trailing garbage."""
from __future__ import annotations

from typing import BinaryIO

from .errors import LayerError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameSource:
    """What the decompressor reads: the frames of `raw`, and EOF where they end (zero
    padding, checked and read to the end so digests cover it) or go wrong (the error is
    kept until the decompressor has had every byte before it, so that damage inside a
    frame is reported as libzstd finds it)."""

    def __init__(self, raw: BinaryIO, read_size: int):
        self._raw = raw
        self._read_size = read_size
        self.frames = ZstdFrames()

    def read(self, n: int) -> bytes:
        frames = self.frames
        while frames.error is None and not frames.padding:
            data = self._raw.read(max(n, self._read_size))
            if not data:
                break
            out = frames.feed(data)
            if frames.padding and frames.error is None:
                while more := self._raw.read(self._read_size):
                    if more.count(0) != len(more):
                        frames.error = LayerError("trailing garbage after zstd stream")
                        break
            if out:
                return out
        return b""


_SKIPPABLE = 0x184D2A50  # ..5F: skippable frames (RFC 8878 3.1.2)
_BLOCK_MAX = 128 << 10


class ZstdFrames:
    """Frame and block boundaries of a zstd stream (RFC 8878), from the headers alone:
    a few thousand small steps per hundred megabytes, the block contents skipped."""

    def __init__(self) -> None:
        self.error: LayerError | None = None
        self.padding = False      # zeros after the last frame
        self._frames = 0          # frames begun
        self._skip = 0            # bytes to pass over (block contents, skippable data)
        self._held = b""          # the start of a header split across reads, not passed on yet
        self._need = 4            # header bytes `_state` wants
        self._state = self._magic
        self._checksum = False

    def feed(self, data: bytes) -> bytes:
        """The leading bytes of (held bytes +) `data` that the decompressor may have: not
        padding, nothing from a bad header on, no header that is not whole yet."""
        if self._held:
            data, self._held = self._held + data, b""
        n = len(data)
        pos = 0
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                continue
            if self._state == self._magic and self._frames and data[pos] == 0:
                if data.count(0, pos) != n - pos:
                    self.error = LayerError("trailing garbage after zstd stream")
                self.padding = True
                return data[:pos]
            need = self._need
            if n - pos < need:
                self._held = data[pos:]
                return data[:pos]
            self._state(data[pos:pos + need])
            if self.error is not None:
                return data[:pos]  # the decompressor does not get the bad header
            pos += need
        return data

    def verdict(self) -> LayerError | None:
        """At the end of the input: what is wrong with the stream, if anything."""
        if self.error is not None or self.padding:
            return self.error
        if self._frames and self._state == self._magic and not self._skip:
            held = self._held
            if not held:
                return None
            if not (ZSTD_MAGIC.startswith(held) or (held[0] & 0xF0 == 0x50
                                                    and b"\x2a\x4d\x18".startswith(held[1:]))):
                return LayerError("trailing garbage after zstd stream")
        return LayerError("truncated zstd stream")

    def _magic(self, head: bytes) -> None:
        magic = int.from_bytes(head, "little")
        if head == ZSTD_MAGIC:
            self._frames += 1
            self._need, self._state = 1, self._descriptor
        elif magic & 0xFFFFFFF0 == _SKIPPABLE:
            self._frames += 1
            self._need, self._state = 4, self._skippable
        elif self._frames:
            self.error = LayerError("trailing garbage after zstd stream")
        else:
            self.error = LayerError("corrupt zstd stream: unknown frame descriptor")

    def _skippable(self, head: bytes) -> None:
        self._skip = int.from_bytes(head, "little")
        self._need, self._state = 4, self._magic

    def _descriptor(self, head: bytes) -> None:
        fhd = head[0]
        if fhd & 0x08:
            self.error = LayerError("corrupt zstd stream: reserved bit set in frame header")
            return
        single = fhd & 0x20
        self._checksum = bool(fhd & 0x04)
        # window descriptor, dictionary id, frame content size
        self._skip = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + \
            ((1 if single else 0), 2, 4, 8)[fhd >> 6]
        self._need, self._state = 3, self._block

    def _block(self, head: bytes) -> None:
        h = int.from_bytes(head, "little")
        kind, size = (h >> 1) & 3, h >> 3
        if kind == 3 or size > _BLOCK_MAX:
            self.error = LayerError("corrupt zstd stream: bad block header")
            return
        self._skip = 1 if kind == 1 else size  # RLE: one byte repeated
        if h & 1:  # the last block: then the checksum, then the next frame
            self._skip += 4 if self._checksum else 0
            self._need, self._state = 4, self._magic
