"""A resumable upload writer that bypasses the page cache (O_DIRECT).

Uploads are written once and read rarely soon after, so filling the page
cache with them only costs: on the machines this runs on, buffered writes of
fresh pages are several times slower than direct ones, and the fsync that
makes a blob durable then waits for all of it. Here data is hashed as it
arrives and written straight to disk in aligned blocks; only the unaligned
tail of each request goes through the page cache (so it survives `kill -9`)
and is rewritten as part of the next aligned block. Where O_DIRECT is not
available (tmpfs), the same class writes through the page cache.

It keeps the file layout and naming of storage's resumable BlobWriter
(`ingest/upload-<id>`), so BlobStore.adopt() publishes what it wrote.
"""
from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

from . import digests
from .blobs import BlobStore

ALIGN = 4096
BLOCK = 4 * 1024 * 1024  # bytes per direct write (a multiple of ALIGN)


class DirectWriter:
    def __init__(self, store: BlobStore, ingest_id: str, algorithm: str = "sha256", direct: bool = True):
        self.tmp: Path = store.ingest_dir / f"upload-{ingest_id}"
        self.algorithm = algorithm
        self._hash = digests.hasher(algorithm)
        self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT, 0o644)
        self._dfd: int | None = None
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._dfd = os.open(self.tmp, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self._dfd = None
        self.offset = 0
        self._rehash()  # resume: whatever the file holds counts
        # The buffer mirrors the file from `_base` (aligned) on; `_fill` bytes are valid.
        self._base = self.offset - self.offset % ALIGN
        self._buf = mmap.mmap(-1, BLOCK)
        self._fill = self.offset - self._base
        if self._fill:
            self._buf[:self._fill] = os.pread(self._fd, self._fill, self._base)
        self._dirty = False  # tail not yet in the file
        self._unsynced = False  # file data not yet fdatasync'ed

    def _rehash(self) -> None:
        while True:
            chunk = os.pread(self._fd, digests.CHUNK, self.offset)
            if not chunk:
                break
            self._hash.update(chunk)
            self.offset += len(chunk)

    def write(self, data: bytes) -> int:
        self.hash(data)
        return self.store(data)

    def hash(self, data: bytes) -> None:
        """The hashing half of write(): may run in another thread than store()
        for the same data, as long as each half sees the data in order."""
        self._hash.update(data)

    def store(self, data: bytes) -> int:
        """The writing half of write()."""
        self.offset += len(data)
        view = memoryview(data)
        while view:
            n = min(len(view), BLOCK - self._fill)
            self._buf[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == BLOCK:
                self._write_block()
        self._dirty = True
        return len(data)

    def _write_block(self) -> None:
        written = -1
        if self._dfd is not None:
            try:
                written = os.pwrite(self._dfd, self._buf, self._base)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: alignment this filesystem refuses
                    raise
                os.close(self._dfd)
                self._dfd = None
        if written < 0:
            written = os.pwrite(self._fd, self._buf, self._base)
        if written != BLOCK:  # a full disk: no partial block may stand as data
            raise OSError(f"short write to {self.tmp}: {written} of {BLOCK} bytes")
        self._base += BLOCK
        self._fill = 0
        self._unsynced = True

    def flush(self, sync: bool = True) -> None:
        """Put the unaligned tail in the file (page cache: survives the
        process dying); `sync` also makes everything durable."""
        if self._dirty and self._fill:
            os.pwrite(self._fd, memoryview(self._buf)[:self._fill], self._base)
            self._unsynced = True
        self._dirty = False
        if sync and self._unsynced:
            os.fdatasync(self._fd)
            self._unsynced = False

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def _close_fds(self) -> None:
        for fd in (self._dfd, self._fd):
            if fd is not None:
                os.close(fd)
        self._dfd = None
        self._fd = -1
        self._buf.close()

    def close(self) -> None:
        """Keep the data (resumable) and release the file."""
        if self._fd >= 0:
            self.flush(sync=True)
            self._close_fds()

    def abort(self) -> None:
        if self._fd >= 0:
            self._close_fds()
        self.tmp.unlink(missing_ok=True)
