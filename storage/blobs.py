"""The blob store: files at `blobs/<alg>/<encoded>`, as in an OCI image layout.

A blob is either whole and correct or absent. Every write goes to a file
under `ingest/`, is hashed as it is written, fsynced, verified and renamed
into place. Two writers of the same blob at once are safe: each has its own
temporary file and the rename of identical content is atomic. A resumable
writer (`BlobWriter` with an ingest id) keeps its data on disk, so its offset
survives a restart of the process.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from . import digests
from .errors import BlobNotFound, DigestMismatch, SizeMismatch, StorageError
from .private import private_dir

_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# On a compressed layer blob that soko wrote itself: the diff_id its writer computed from the
# very bytes it compressed (see BlobStore.note_diff_id).
DIFF_ID_XATTR = "user.soko.diff_id"

WRITEBACK = 32 * 1024 * 1024  # writers start writing back after this many bytes
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[[int, int, int, int], int] | None = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset+length) of `fd` to disk without waiting
    (a hint: errors come back from the fdatasync that follows). Writers call it
    every WRITEBACK bytes, so dirty pages never pile up to be throttled or flushed
    in one burst, and the fsync that makes a blob durable has little left to do."""
    global _sync_file_range
    if _sync_file_range is None:  # not Linux: writeback starts when the kernel likes
        _sync_file_range = _libc("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")
    _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _libc(name: str, *argtypes: str) -> Callable[..., int]:
    """libc's function `name` (argument types named as in ctypes), or one that
    does nothing where there is none."""
    try:
        import ctypes  # only writers need it: not at import

        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
        fn.argtypes = [getattr(ctypes, t) for t in argtypes]
        return fn
    except (OSError, AttributeError):
        return lambda *args: 0


_FALLOC_FL_KEEP_SIZE = 1
_fallocate: Callable[[int, int, int, int], int] | None = None


def preallocate(fd: int, offset: int, length: int) -> None:
    """Reserve disk blocks for [offset, offset+length) of `fd` without changing its
    size (a hint: nothing happens where the filesystem cannot). Buffered writes
    into reserved blocks skip the filesystem's per-page delayed allocation
    (ext4: ~40 % less CPU per byte written); blocks left past the end are freed
    by truncating the file to its size."""
    global _fallocate
    if _fallocate is None:
        _fallocate = _libc("fallocate", "c_int", "c_int", "c_int64", "c_int64")
    _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length)


class BlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / "ingest"
        private_dir(self.blobs_dir)
        private_dir(self.ingest_dir)

    # -- reading -----------------------------------------------------------
    def path(self, digest: str) -> Path:
        d = digests.parse(digest)
        return self.blobs_dir / d.algorithm / d.encoded

    def local_path(self, digest: str) -> Path:
        """The file holding the blob (the content store's "local path")."""
        return self.path(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def stat(self, digest: str) -> "os.stat_result | None":
        try:
            return self.path(digest).stat()
        except FileNotFoundError:
            return None

    def modified(self, digest: str) -> float:
        st = self.stat(digest)
        if st is None:
            raise BlobNotFound(digest)
        return st.st_mtime

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def note_diff_id(self, digest: str, diff_id: str) -> None:
        """Note on compressed layer blob `digest`, just written by soko, that it decompresses to
        `diff_id` (the writer hashed the tar it compressed): applying it with that diff_id then
        need not hash the tar again, the codec's own checksum (gzip's CRC-32, zstd's content
        checksum) still checking every byte. Only for blobs whose codec checksums their content;
        where the filesystem keeps no user xattrs nothing is noted. The note names the file's
        size and mtime too: an xattr belongs to the inode, and a blob hard-linked out (a local
        cache export) and written in place there is no longer what was noted."""
        path = self.path(digest)
        try:
            st = os.stat(path)
            os.setxattr(path, DIFF_ID_XATTR, f"{diff_id} {st.st_size} {st.st_mtime_ns}".encode())
        except OSError:
            pass

    def noted_diff_id(self, digest: str) -> str | None:
        """What `note_diff_id` noted on blob `digest`, if anything, while the file is still the
        size and mtime it had then."""
        path = self.path(digest)
        try:
            diff_id, size, mtime_ns = os.getxattr(path, DIFF_ID_XATTR).decode().split(" ")
            st = os.stat(path)
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return diff_id if (str(st.st_size), str(st.st_mtime_ns)) == (size, mtime_ns) else None

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def read_range(self, digest: str, offset: int, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of [offset, offset+length) in chunks."""
        with self.open(digest) as f:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                n = digests.CHUNK if remaining is None else min(digests.CHUNK, remaining)
                chunk = f.read(n)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def __iter__(self) -> Iterator[str]:
        """Every stored blob's digest."""
        for alg in digests.ALGORITHMS:
            d = self.blobs_dir / alg
            if d.is_dir():
                for entry in os.scandir(d):
                    name = f"{alg}:{entry.name}"
                    if entry.is_file() and digests.is_valid(name):
                        yield name

    # -- writing -----------------------------------------------------------
    def writer(self, ingest_id: str | None = None) -> "BlobWriter":
        """A new writer, or (with `ingest_id`) the resumable one of that id."""
        return BlobWriter(self, ingest_id)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store `data`; a blob already stored is not written again (it is whole and correct)."""
        digest = digests.of_bytes(data, digests.parse(expected).algorithm if expected else "sha256")
        if (expected is None or digest == expected) and self.has(digest):
            return digest
        w = self.writer()
        try:
            w.write(data)
            return w.commit(expected, len(data) if expected else None)
        finally:
            w.close()

    def put_stream(self, chunks: Iterable[bytes] | BinaryIO, expected: str | None = None,
                   size: int | None = None) -> str:
        w = self.writer()
        try:
            if hasattr(chunks, "read"):
                while True:
                    chunk = chunks.read(digests.CHUNK)  # type: ignore[union-attr]
                    if not chunk:
                        break
                    w.write(chunk)
            else:
                for chunk in chunks:  # type: ignore[union-attr]
                    w.write(chunk)
            return w.commit(expected, size)
        finally:
            w.close()

    def new_temp(self, suffix: str = "") -> Path:
        """A private path under ingest/ (same filesystem as blobs/) for a caller
        that produces a file itself, then hands it over with `adopt`."""
        return self.ingest_dir / f"tmp-{os.urandom(12).hex()}{suffix}"

    def adopt(self, tmp: Path, digest: str, verify: bool = False, sync: bool = True, fsynced: bool = False) -> str:
        """Move a finished temporary file into place as `digest`.

        The caller computed the digest while writing it; `verify=True`
        hashes it again (for files whose producer is not trusted).
        `sync=False` skips the fsyncs for a caller that calls
        `sync_dir(digest)` afterwards; `fsynced` says the file itself is durable."""
        if verify:
            actual, _ = digests.of_path(tmp, digests.parse(digest).algorithm)
            if actual != digest:
                tmp.unlink(missing_ok=True)
                raise DigestMismatch(digest, actual)
        if sync and not fsynced:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        return self._place(tmp, digest, sync)

    def _place(self, tmp: Path, digest: str, sync: bool = True) -> str:
        """Rename into place; a blob already there stays and gets a fresh mtime
        (a collector's grace period then counts from this commit)."""
        dest = self.path(digest)
        private_dir(dest.parent)
        try:
            os.utime(dest)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            if sync:
                _fsync_dir(dest.parent)
        else:
            tmp.unlink(missing_ok=True)
        return digest

    def sync_dir(self, digest: str) -> None:
        """Make the placement of `digest` durable (after adopt(sync=False))."""
        _fsync_dir(self.path(digest).parent)

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def ingest_entries(self) -> Iterator[tuple[Path, float]]:
        """(path, mtime) of everything under ingest/, for garbage collection."""
        for entry in os.scandir(self.ingest_dir):
            try:
                yield Path(entry.path), entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue

    def clean_ingest(self, older_than: float) -> int:
        """Remove ingest files untouched for `older_than` seconds (abandoned writes)."""
        cutoff = time.time() - older_than
        removed = 0
        for path, mtime in list(self.ingest_entries()):
            if mtime < cutoff:
                if path.is_dir():
                    import shutil  # here: `soko run` and most commands never clean ingest/

                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
        return removed


class BlobWriter:
    """Streams one blob to disk while hashing it.

    Anonymous writers use a private temporary file that vanishes on `close`
    unless committed. Resumable writers (an `ingest_id`) keep `ingest/<id>`;
    reopening one re-hashes what is on disk, so the offset is whatever was
    durably written, even after a `kill -9`.
    """

    def __init__(self, store: BlobStore, ingest_id: str | None = None, algorithm: str = "sha256"):
        self.store = store
        self.ingest_id = ingest_id
        self.resumable = ingest_id is not None
        if ingest_id is not None:
            if not ingest_id or not set(ingest_id) <= _ID_OK or len(ingest_id) > 128:
                raise StorageError(f"invalid ingest id {ingest_id!r}")
            self.tmp = store.ingest_dir / f"upload-{ingest_id}"
        else:
            self.tmp = store.new_temp()
        self._hash = digests.hasher(algorithm)
        self.algorithm = algorithm
        self.offset = 0
        self._file: BinaryIO | None = open(self.tmp, "ab+")
        self._file.seek(0)
        if self.resumable:
            buf = bytearray(digests.CHUNK)
            view = memoryview(buf)
            while True:
                n = self._file.readinto(buf)
                if not n:
                    break
                self._hash.update(view[:n])
                self.offset += n
        self.committed = False

    def write(self, data: bytes) -> int:
        assert self._file is not None, "writer is closed"
        self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)
        return len(data)

    def flush(self) -> None:
        """Make what was written durable (so a resumed writer sees it)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def commit(self, expected: str | None = None, size: int | None = None) -> str:
        """Verify and move into place; returns the digest. On a mismatch the
        partial data is discarded and DigestMismatch/SizeMismatch raised."""
        assert self._file is not None, "writer is closed"
        self.flush()
        self._file.close()
        self._file = None
        try:
            if size is not None and size != self.offset:
                raise SizeMismatch(f"size mismatch: expected {size} bytes, got {self.offset}")
            actual = self.digest
            if expected is not None:
                alg = digests.parse(expected).algorithm
                if alg != self.algorithm:
                    actual, _ = digests.of_path(self.tmp, alg)
                if actual != expected:
                    raise DigestMismatch(expected, actual)
            self.store._place(self.tmp, actual)
            self.committed = True
            return actual
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Throw the data away, also for a resumable writer."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the file; an anonymous uncommitted writer loses its data,
        a resumable one keeps it for later."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
        if not self.resumable and not self.committed:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
