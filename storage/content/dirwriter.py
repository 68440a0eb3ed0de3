"""The directory store's writer: resumable, through the page cache with the
writeback started as data arrives, or bypassing the page cache (O_DIRECT).

Through the page cache (the default): a blob pushed a moment ago is usually
pulled soon after, and is then served from memory. So that this costs the push
little (the page cache's pages and their writeback do cost the writer some CPU
that O_DIRECT does not: bench/README.md, "Blobs"), writeback starts early:
every WRITEBACK bytes the range just written goes to the disk
(`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so dirty
pages never pile up to be throttled or flushed in one burst, and the fdatasync
that makes a blob durable before it is linked has at most WRITEBACK bytes left
to wait for.

O_DIRECT (`direct=True`, for data nobody reads soon): data is written straight
to disk in aligned blocks; only the unaligned tail of each request goes
through the page cache (so it survives `kill -9`) and is rewritten as part of
the next aligned block. Where O_DIRECT is not available (tmpfs), the writer
falls back to the page cache.

Its file is `ingest/upload-<ref>`; commit() makes it durable, verifies it and
renames it into `blobs/<alg>/<encoded>` (BlobStore's layout): a writer killed
at any point leaves an ingest file, never a blob.

A writer holds a shared flock on its file while it is open: garbage
collection (`unlink_unless_busy`) never removes a file someone is writing,
however old its mtime. Between requests a writer can be parked: the file and
the buffer are released, only the running hash is kept, and a writer resumed
from it continues without reading the file again.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar

from .. import digests
from ..blobs import BlobStore, preallocate, start_writeback
from ..errors import DigestMismatch, SizeMismatch
from .base import Info, Writer, check_ref

T = TypeVar("T")

ALIGN = 4096
BLOCK = 4 * 1024 * 1024  # bytes per direct write (a multiple of ALIGN)
# Writeback starts every WRITEBACK bytes. Smaller than blobs.WRITEBACK: an upload's commit waits for the last
# range to reach the disk before the blob is linked (a push of 256 MiB: 8 MiB ~10 % faster than 32; 4 the same as 8).
WRITEBACK = 8 * 1024 * 1024
# Disk blocks are reserved (fallocate) up to this far ahead of the data, and never further ahead than the data this
# writer has stored (a client cannot make the store hold more than twice what it sent); released when the writer
# commits, parks or closes. A push of 256 MiB: ~10 % less server CPU.
PREALLOCATE = 32 * 1024 * 1024


@dataclass
class Parked:
    """What a parked writer keeps: its running hash and how many bytes it covers."""
    hash: Any
    offset: int


def open_locked(path: Path) -> int:
    """Open (creating) and share-lock `path`, making sure the lock is on the
    file that is still at `path` (a collector may unlink it in between)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def unlink_unless_busy(path: Path, unlink: bool = True) -> bool:
    """Remove an ingest file unless an open writer holds it; True when it is
    gone (or, with unlink=False, could have been removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if unlink:
            path.unlink(missing_ok=True)  # under our lock: no writer can be starting on it
        return True
    finally:
        os.close(fd)


def ingest_path(blobs: BlobStore, ref: str) -> Path:
    return blobs.ingest_dir / f"upload-{check_ref(ref)}"


class FileWriter(Writer):
    """Writes `ingest/upload-<ref>`. Without a ref it is anonymous: its data is
    dropped unless committed. The plain methods block (call them in a worker
    thread); the async ones run them in `executor`."""

    stores_at_once = True

    def __init__(self, store: BlobStore, ref: str | None = None, algorithm: str = "sha256", direct: bool = False,
                 resume: Parked | None = None, executor: Executor | None = None):
        self.anonymous = ref is None
        self.ref = ref = ref if ref is not None else f"anon-{secrets.token_hex(12)}"
        self.blobs = store
        self.executor = executor
        self.tmp: Path = ingest_path(store, ref)
        self.algorithm = algorithm
        self._fd = open_locked(self.tmp)
        self._dfd: int | None = None
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._dfd = os.open(self.tmp, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self._dfd = None
        if resume is not None and resume.hash.name == algorithm and os.fstat(self._fd).st_size == resume.offset:
            self._hash, self.offset = resume.hash, resume.offset
        else:
            self._hash = digests.hasher(algorithm)
            self.offset = 0
            self._rehash()  # resume: whatever the file holds counts
        # O_DIRECT only: the buffer mirrors the file from `_base` (aligned) on; `_fill` bytes are valid.
        self._base = self.offset - self.offset % ALIGN
        self._fill = 0
        self._buf: mmap.mmap | None = None
        if self._dfd is not None:
            self._buf = mmap.mmap(-1, BLOCK)
            self._fill = self.offset - self._base
            if self._fill:
                self._buf[:self._fill] = os.pread(self._fd, self._fill, self._base)
        self._written_back = self.offset  # through the page cache: writeback started up to here
        self._opened_at = self.offset
        # through the page cache: blocks reserved up to here. A file that holds data may also hold
        # blocks a killed writer reserved past its end: one past the data makes the first release free them.
        self._allocated = self.offset + 1 if self.offset else 0
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
        if self._buf is None:
            return self._store_cached(data)
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

    def _store_cached(self, data: bytes) -> int:
        view = memoryview(data)
        offset = self.offset
        end = offset + len(data)
        if end > self._allocated:
            self._allocated = end + min(PREALLOCATE, end - self._opened_at)
            preallocate(self._fd, offset, self._allocated - offset)
        while view:
            n = os.pwrite(self._fd, view, offset)
            offset += n
            view = view[n:]
        self.offset = offset
        self._unsynced = True
        if offset - self._written_back >= WRITEBACK:
            start_writeback(self._fd, self._written_back, offset - self._written_back)
            self._written_back = offset
        return len(data)

    def _write_block(self) -> None:
        assert self._buf is not None
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

    def _release(self) -> None:
        """Free the blocks reserved past the data (truncating to the file's own size: never
        longer, as an O_DIRECT writer's tail still in its buffer would make it with zeros)."""
        if self._allocated > self.offset:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size)
            self._allocated = self.offset

    def flush_sync(self, sync: bool = True) -> None:
        """Put the unaligned tail in the file (page cache: survives the
        process dying); `sync` also makes everything durable."""
        if self._dirty and self._fill and self._buf is not None:
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
        if self._buf is not None:
            self._buf.close()
            self._buf = None

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close_sync(self) -> None:
        """Keep the data (resumable; an anonymous writer's goes) and release the
        file (also when the last flush fails)."""
        if self.anonymous:
            self.abort_sync()
        elif self._fd >= 0:
            try:
                self._release()
                self.flush_sync(sync=True)
            finally:
                self._close_fds()

    def park_sync(self) -> Parked:
        """Release file and buffer, keep the running hash (the data stays in the
        page cache: it survives the process dying); resume with `resume=`."""
        self._release()
        self.flush_sync(sync=False)
        self._close_fds()
        return Parked(self._hash, self.offset)

    def abort_sync(self) -> None:
        if self._fd >= 0:
            self._close_fds()
        self.tmp.unlink(missing_ok=True)

    def verify(self, size: int | None, expected: str) -> None:
        """(after flush_sync) Raise, dropping the data, unless size and digest match."""
        try:
            if size is not None and size != self.offset:
                raise SizeMismatch(f"size mismatch: expected {size} bytes, got {self.offset}")
            alg = digests.parse(expected).algorithm
            actual = self.digest if alg == self.algorithm else digests.of_path(self.tmp, alg)[0]
            if actual != expected:
                raise DigestMismatch(expected, actual)
        except BaseException:
            self.abort_sync()
            raise

    def commit_sync(self, size: int | None, expected: str) -> Info:
        """Durable, verified, then renamed into place (an existing blob gets a
        fresh mtime instead). The shared lock is held until then: a collector
        never takes the file."""
        self._release()
        self.flush_sync(sync=True)
        self.verify(size, expected)
        try:
            self.blobs.adopt(self.tmp, expected, fsynced=True)
        finally:
            if self._fd >= 0:
                self._close_fds()
        return Info(expected, self.offset, self.blobs.modified(expected))

    # -- the async interface: the same, in the executor ----------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    async def flush(self) -> None:
        await self._run(self.flush_sync, False)

    async def commit(self, size: int | None, expected: str) -> Info:
        return await self._run(self.commit_sync, size, expected)

    async def abort(self) -> None:
        await self._run(self.abort_sync)

    async def park(self) -> Parked:
        return await self._run(self.park_sync)

    async def close(self) -> None:
        await self._run(self.close_sync)
