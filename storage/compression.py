"""Layer compression: gzip, zstd or none.

Reading: the format is detected by magic bytes (media types lie often enough),
and decompression streams in bounded pieces, so a small hostile blob cannot
balloon into gigabytes of memory. Truncated or corrupt streams raise
LayerError with a one-line message instead of a zlib/zstd traceback.

Writing: gzip is compressed pigz-style: fixed 1 MiB blocks deflated in
parallel threads (the deflate engines release the GIL), each primed with the
previous block's last 32 KiB as dictionary and ended with a sync flush, then
concatenated into one ordinary gzip member. Block boundaries depend only on
the byte stream, so the output is deterministic whatever the thread count.
Levels are gzip's 0-9; 1-6 deflate with ISA-L (python-isal: 10-15x zlib's
speed for a 10-15 % larger output), 0 and 7-9 with zlib, for those who ask
for the smallest output (or none) rather than speed. Inflating uses ISA-L
too (about twice zlib's speed).
zstd uses libzstd's own worker threads, whose output is the same for any
worker count >= 1. Without a level it compresses with ZSTD_DEFAULT (see there);
a level given is libzstd's level exactly.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from typing import TYPE_CHECKING, BinaryIO, Iterator, Protocol

from .errors import LayerError
from .zstd_frames import ZSTD_MAGIC, FrameSource

if TYPE_CHECKING:
    from concurrent.futures import Future

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"
COMPRESSIONS = (GZIP, ZSTD, NONE)

GZIP_MAGIC = b"\x1f\x8b"
# Formats Docker once accepted but OCI never did: named in the error. (bzip2
# with its first block's magic too: a tar may well start with a file "BZh…".)
_UNSUPPORTED_MAGIC = {**{b"BZh%d1AY&SY" % i: "bzip2" for i in range(1, 10)},
                      b"\xfd7zXZ\x00": "xz"}

CHUNK = 1 << 20           # decompressed pieces handed to consumers
READ_SIZE = 1 << 20       # reads from the compressed source
GZIP_BLOCK = 1 << 20      # uncompressed bytes per parallel deflate job
GZIP_WINDOW = 32768

GZIP_DEFAULT_LEVEL = 6  # zstd without a level: ZSTD_DEFAULT below
# zstd without a level: level 2's search (the "fast" strategy, minMatch 6) with a 4 MiB
# window and level 3's hashLog 17, in 8 MiB jobs. Against the earlier default (level 3's
# "dfast" search, same window) it takes 13-22 % less compressing CPU, which is what keeps
# up with `tar | zstd -T0` on 2 cores (bench/README.md "Layers"); the output is 0.515 /
# 0.336 / 0.327 of the tar (bench tree, a Debian rootfs, /usr) against the zstd 1.5.4
# CLI's 0.522 / 0.339 / 0.321 and the earlier default's 0.514 / 0.325 / 0.318.
# Decoding needs a 4 MiB window (level 5 and up need more; decoders accept 128 MiB) and
# costs what it did (a window of 8 MiB would cost 14 % more).
ZSTD_DEFAULT_BASE = 2
ZSTD_DEFAULT = {"window_log": 22, "hash_log": 17, "job_size": 8 << 20}


def detect(head: bytes) -> str:
    """The compression of a stream that starts with `head` (4 bytes suffice)."""
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return NONE


def check(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise LayerError(f"unknown compression {compression!r} (use gzip, zstd or none)")
    return compression


LEVELS = {GZIP: (0, 9), ZSTD: (1, 22)}


def check_level(compression: str, level: int | None) -> int | None:
    """`level` if `compression` has it (None: the default level)."""
    if level is None:
        return None
    if compression not in LEVELS:
        raise LayerError(f"compression {compression} has no levels")
    lo, hi = LEVELS[compression]
    if not lo <= level <= hi:
        raise LayerError(f"{compression} level must be {lo}..{hi}, not {level}")
    return level


class _Prefixed:
    """A reader that first returns bytes already taken from `raw` for sniffing."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._raw.read(n)


def sniff(raw: BinaryIO) -> tuple[str, BinaryIO]:
    """Detect the compression of `raw` without losing the bytes read to do it."""
    head = b""
    while len(head) < 10:
        more = raw.read(10 - len(head))
        if not more:
            break
        head += more
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise LayerError(f"{name}-compressed layers are not supported (gzip, zstd or none)")
    return detect(head), _Prefixed(head, raw)  # type: ignore[return-value]


# -- reading -----------------------------------------------------------------

def iter_decompressed(raw: BinaryIO, compression: str | None = None,
                      chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the decompressed bytes of `raw` in pieces of at most ~`chunk`.

    `compression=None` detects it from the magic bytes. Raises LayerError
    when the stream is truncated, corrupt, or followed by garbage."""
    if compression is None:
        compression, raw = sniff(raw)
    check(compression)
    if compression == GZIP:
        return _iter_gzip(raw, chunk)
    if compression == ZSTD:
        return _iter_zstd(raw, chunk)
    return _iter_plain(raw, chunk)


def _iter_plain(raw: BinaryIO, chunk: int) -> Iterator[bytes]:
    while True:
        data = raw.read(max(chunk, READ_SIZE))
        if not data:
            return
        yield data


def _trailing_zeros(data: bytes, what: str) -> None:
    """Between members only zero padding (as some tape-style writers add) is allowed."""
    if data.count(0) != len(data):
        raise LayerError(f"trailing garbage after {what} stream")


def _iter_gzip(raw: BinaryIO, chunk: int) -> Iterator[bytes]:
    from isal import isal_zlib  # the codecs are imported when used: most commands use neither

    d = isal_zlib.decompressobj(31)  # None between members
    padding = False  # after zero padding only zeros may follow
    while True:
        data = raw.read(READ_SIZE)
        if not data:
            break
        while data:
            if padding:
                _trailing_zeros(data, "gzip")
                break
            if d is None:
                if data[0] == 0:
                    padding = True
                    continue
                d = isal_zlib.decompressobj(31)  # another member (pigz -i, cat a.gz b.gz)
            try:
                out = d.decompress(data, chunk)
                if out:
                    yield out
                # Output was capped at `chunk`: zlib may hold more for this input.
                while len(out) == chunk and not d.eof and not d.unconsumed_tail:
                    out = d.decompress(b"", chunk)
                    if out:
                        yield out
            except (zlib.error, isal_zlib.error) as e:
                raise LayerError(f"corrupt gzip stream: {_zmsg(e)}") from None
            if d.eof:
                data, d = d.unused_data, None
            else:
                data = d.unconsumed_tail
    if d is not None:
        raise LayerError("truncated gzip stream")


def _zmsg(e: Exception) -> str:
    msg = str(e)
    # "Error -3 while decompressing data: invalid distance too far back"
    return msg.split(": ", 1)[1] if ": " in msg else msg


def _iter_zstd(raw: BinaryIO, chunk: int) -> Iterator[bytes]:
    """libzstd decompresses into `chunk`-sized outputs in C (few GIL round trips, no joins);
    zstd_frames follows the frame boundaries it cannot report: truncation, padding, garbage."""
    import zstandard

    source = FrameSource(raw, READ_SIZE)
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=READ_SIZE, read_across_frames=True, closefd=False)
    while True:
        try:
            out = reader.read(chunk)
        except zstandard.ZstdError as e:
            raise LayerError(f"corrupt zstd stream: {_zstd_msg(e)}") from None
        if not out:
            break
        yield out
    error = source.frames.verdict()
    if error is not None:
        raise error


def _zstd_msg(e: Exception) -> str:
    msg = str(e)
    return msg.split(": ", 1)[1] if ": " in msg else msg


class DecompressingReader:
    """A read-only binary stream of the decompressed content of `raw`."""

    def __init__(self, raw: BinaryIO, compression: str | None = None):
        if compression is None:
            compression, raw = sniff(raw)
        self.compression = check(compression)
        self._it = iter_decompressed(raw, compression)
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._buf[self._pos:]]
            parts.extend(self._it)
            self._buf, self._pos = b"", 0
            return b"".join(parts)
        while self._pos >= len(self._buf):
            nxt = next(self._it, None)
            if nxt is None:
                return b""
            self._buf, self._pos = nxt, 0
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._it = iter(())


def open_reader(raw: BinaryIO, compression: str | None = None) -> DecompressingReader:
    """A decompressing reader over `raw`; `compression=None` detects it."""
    return DecompressingReader(raw, compression)


# -- writing -----------------------------------------------------------------

class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class CompressWriter(Protocol):
    """Takes ownership of each buffer passed to `write` (it must not change afterwards)
    when `keeps_buffers`; otherwise it is done with the buffer when `write` returns, as
    far as the writer goes (a sink that copies then lets the caller refill the buffer)."""

    keeps_buffers: bool

    def write(self, data: bytes | bytearray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class PlainWriter:
    keeps_buffers = False  # straight to the sink

    def __init__(self, out: Sink):
        self.out = out

    def write(self, data: bytes | bytearray) -> None:
        self.out.write(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _crc32(data: bytes | bytearray, crc: int) -> int:
    from isal import isal_zlib

    return isal_zlib.crc32(data, crc)


def _engine(level: int):
    """(deflate module, its own level) for gzip level `level` (see the module docstring)."""
    if 1 <= level <= 6:
        from isal import isal_zlib

        return isal_zlib, (level + 2) // 3   # 1-3 -> ISA-L 1, 4-6 -> ISA-L 2
    return zlib, level


def _deflate_block(data: bytes | bytearray, level: int, zdict: bytes) -> bytes:
    engine, own = _engine(level)
    if zdict:
        c = engine.compressobj(own, engine.DEFLATED, -15, 8, engine.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = engine.compressobj(own, engine.DEFLATED, -15)
    return c.compress(data) + c.flush(engine.Z_SYNC_FLUSH)


class GzipWriter:
    """One gzip member, deflated in parallel 1 MiB blocks (see module docstring)."""

    keeps_buffers = True  # blocks wait in the deflate threads' queue

    def __init__(self, out: Sink, level: int = 6, threads: int | None = None):
        check_level(GZIP, level)
        self.out = out
        self.level = level
        self.threads = max(1, threads if threads else (os.cpu_count() or 1))
        self._pool = None
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor  # imported by the commands that compress

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="soko-gzip")
        self._pending: deque[Future | bytes] = deque()
        self._buf = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        # mtime 0 and OS "unknown": nothing about the writing machine leaks in.
        self.out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((xfl, 255)))

    def write(self, data: bytes | bytearray) -> None:
        if not self._buf and len(data) == GZIP_BLOCK:
            self._submit(data)
            return
        self._buf += data
        while len(self._buf) >= GZIP_BLOCK:
            block = bytes(self._buf[:GZIP_BLOCK])
            del self._buf[:GZIP_BLOCK]
            self._submit(block)

    def _submit(self, block: bytes | bytearray) -> None:
        self._crc = _crc32(block, self._crc)
        self._size += len(block)
        zdict = self._tail
        tail = block[-GZIP_WINDOW:]
        self._tail = bytes(tail) if len(tail) == GZIP_WINDOW else (zdict + bytes(tail))[-GZIP_WINDOW:]
        if self._pool is None:
            self._pending.append(_deflate_block(block, self.level, zdict))
        else:
            self._pending.append(self._pool.submit(_deflate_block, block, self.level, zdict))
        while len(self._pending) > 2 * self.threads:
            self._emit()

    def _emit(self) -> None:
        job = self._pending.popleft()
        self.out.write(job if isinstance(job, bytes) else job.result())

    def close(self) -> None:
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf = bytearray()
        while self._pending:
            self._emit()
        if self._pool is not None:
            self._pool.shutdown()
        # An empty final block, then CRC-32 and size modulo 2^32 (RFC 1952).
        self.out.write(b"\x03\x00" + struct.pack("<II", self._crc & 0xFFFFFFFF,
                                                 self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class ZstdWriter:
    """One zstd frame with a content checksum, compressed by libzstd's worker threads.

    Fed from the caller's thread: in multi-threaded mode libzstd copies each piece
    into its next job and returns, blocking only while all its jobs are taken, when
    the workers have plenty queued. (A feeding thread of its own, as there once was,
    did not make writing faster and added a second thread wanting the GIL.)"""

    keeps_buffers = False  # libzstd copies each piece into its job's buffer

    def __init__(self, out: Sink, level: int | None = None, threads: int | None = None):
        import zstandard

        check_level(ZSTD, level)
        self.out = out
        # threads=-1: one worker per CPU; output is identical for any count >= 1.
        if level is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                ZSTD_DEFAULT_BASE, threads=threads or -1, write_checksum=True, **ZSTD_DEFAULT)
            cctx = zstandard.ZstdCompressor(compression_params=params)
        else:
            cctx = zstandard.ZstdCompressor(level=level, threads=threads or -1, write_checksum=True)
        self._c = cctx.compressobj()

    def write(self, data: bytes | bytearray) -> None:
        out = self._c.compress(data)
        if out:
            self.out.write(out)

    def close(self) -> None:
        out = self._c.flush()
        if out:
            self.out.write(out)

    def abort(self) -> None:
        pass  # nothing runs between calls: the compressor goes with this object


def open_writer(out: Sink, compression: str, level: int | None = None,
                threads: int | None = None) -> CompressWriter:
    """A compressing writer for `compression` that writes its output to `out`."""
    check(compression)
    if compression == GZIP:
        return GzipWriter(out, GZIP_DEFAULT_LEVEL if level is None else level, threads)
    if compression == ZSTD:
        return ZstdWriter(out, level, threads)
    return PlainWriter(out)
