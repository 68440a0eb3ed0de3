"""Downloading one blob into a blob store, verified, resumable.

The body streams into a resumable blob writer keyed by the digest, so a
dropped connection (or a killed process) continues with `Range:` from what
is already on disk; the writer hashes as it writes and the blob only enters
the store when the writer's commit finds digest and size right.

The GET goes through the session like every other request (its scheme, TLS
context, kept connections, credentials and token; a redirect to another origin
gets no credentials), and the body is handed to the writer piece by piece in the
transport's worker thread (wire.Response.read_into): socket reads, hashing and
file writes all release the GIL there, so several blobs use both cores. Blobs are
written with the directory content store's writer (O_DIRECT where the filesystem
allows it): fresh page-cache pages are slow to fill on the machines this runs on,
and the fsync that makes each blob durable then has little left to do.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage import digests
from storage.blobs import BlobStore
from storage.content.directory import DirectoryStore
from storage.content.dirwriter import FileWriter

from . import wire
from .errors import ConnectionDropped, ProtocolError, Unreachable, VerificationError
from .options import ClientOptions
from .remote import Repository
from .session import describe, detail_of, retry_after, retryable_status

PROGRESS_EVERY = 4 << 20   # bytes between progress reports
Report = Callable[[int], None]


@dataclass
class _Outcome:
    """What one GET attempt came to."""
    status: int = 0
    headers: Any = None
    body: bytes = b""            # error bodies only
    dropped: BaseException | None = None   # the connection broke (resume from writer.offset)


class _TooLong(Exception):
    """The body goes past the size the descriptor announces."""


class _Sink:
    """Appends a body to the writer, in the transport's worker thread: skips what a registry
    that ignored Range sends again, refuses bytes past the announced size, reports progress."""

    def __init__(self, writer: FileWriter, size: int, skip: int, progress: Report):
        self.writer, self.size, self.skip, self.progress = writer, size, skip, progress
        self.reported = writer.offset

    def __call__(self, chunk: memoryview) -> None:
        if self.skip:
            cut = min(self.skip, len(chunk))
            self.skip -= cut
            chunk = chunk[cut:]
            if not len(chunk):
                return
        w = self.writer
        if w.offset + len(chunk) > self.size:
            raise _TooLong()
        w.write(chunk)
        if w.offset - self.reported >= PROGRESS_EVERY:
            self.reported = w.offset
            self.progress(w.offset)


async def _get(repo: Repository, digest: str, start: int, writer: FileWriter, size: int,
               progress: Report) -> _Outcome:
    """One GET of the blob from `start`, its body appended to `writer`; the caller retries."""
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        resp = await repo.session.request("GET", f"/v2/{repo.path}/blobs/{digest}", scopes=repo.scopes,
                                          headers=headers, retries=0)
    except (ConnectionDropped, Unreachable) as e:
        return _Outcome(dropped=e)
    async with resp:
        status, hdrs = resp.status, resp.headers
        try:
            if status not in (200, 206):
                return _Outcome(status, hdrs, await resp.read(65536))
            got = hdrs.get("Content-Range") or ""
            if status == 206 and not got.startswith(f"bytes {start}-"):
                raise ProtocolError(f"blob {digest} from {repo.describe()}: asked for bytes from {start}, "
                                    f"got range {got!r}")
            skip = start if status == 200 else 0  # the registry ignored Range
            await resp.read_into(_Sink(writer, size, skip, progress))
        except wire.TransportError as e:
            return _Outcome(status, hdrs, dropped=e)
    return _Outcome(status, hdrs)


async def download_blob(repo: Repository, digest: str, size: int, blobs: BlobStore,
                        options: ClientOptions, report: Report, pool: Executor | None = None) -> bool:
    """Fetch `digest` into `blobs`, verified. False when it was already there.
    `pool` runs the writer's blocking work (its commit: the fsync and the rename)."""
    if blobs.has(digest):
        return False
    d = digests.parse(digest)
    ingest_id = f"pull-{d.algorithm}-{d.encoded}"
    lock_path = blobs.ingest_dir / f"lock-{ingest_id}"
    lock_fd = await _lock(lock_path)  # another pull of the same blob waits here
    try:
        if blobs.has(digest):
            return False
        await _download_locked(repo, digest, size, blobs, ingest_id, options, report, pool)
        return True
    finally:
        lock_path.unlink(missing_ok=True)  # also after a failure; waiters notice and lock afresh
        os.close(lock_fd)


async def _lock(path: Path) -> int:
    """An exclusive flock on the file that is still at `path` once granted
    (the holder removes the file when done, so a waiter may get a dead one)."""
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _too_long(repo: Repository, digest: str, size: int) -> VerificationError:
    return VerificationError(f"blob {digest} from {repo.describe()}: more data than the {size} bytes its "
                             f"descriptor announces; nothing was stored", digest)


async def _download_locked(repo: Repository, digest: str, size: int, blobs: BlobStore, ingest_id: str,
                           options: ClientOptions, report: Report, pool: Executor | None) -> None:
    sess = repo.session
    await sess.ping()
    algorithm = digests.parse(digest).algorithm
    content = DirectoryStore(blobs, pool, options.direct_io)
    writer = content.writer_sync(ingest_id, algorithm)
    if writer.offset > size:  # leftovers of something else: start clean
        writer.abort_sync()
        writer = content.writer_sync(ingest_id, algorithm)
    loop = asyncio.get_running_loop()
    failures = 0

    def progress(done: int) -> None:
        loop.call_soon_threadsafe(report, done)

    try:
        # (a killed pull may have left it all on disk already; a drop may come right at the end)
        while writer.offset < size or size == 0:
            report(writer.offset)
            try:
                out = await _get(repo, digest, writer.offset, writer, size, progress)
            except _TooLong:
                raise _too_long(repo, digest, size) from None
            wait = None
            if out.dropped is None and out.status not in (200, 206):
                if not retryable_status(out.status):
                    raise sess.status_error(out.status, detail_of(out.body), f"blob {digest} in {repo.describe()}",
                                            repo.describe())
                wait = retry_after(out.headers)
            elif out.dropped is None and writer.offset >= size:
                break
            # a drop, a retryable status, or a clean end short of the size: again, from writer.offset
            writer.flush_sync(sync=False)
            failures += 1
            if failures > options.retries:
                if out.dropped is not None:
                    raise ConnectionDropped(f"blob {digest} from {repo.describe()}: the connection kept dropping "
                                            f"({describe(out.dropped)})")
                if out.status not in (200, 206):
                    raise sess.status_error(out.status, detail_of(out.body), f"blob {digest} in {repo.describe()}")
                break
            await sess.backoff(failures, wait)
        report(writer.offset)
        if writer.offset != size:
            raise VerificationError(f"blob {digest} from {repo.describe()}: got {writer.offset} bytes, its "
                                    f"descriptor says {size}; nothing was stored", digest)
        if writer.digest != digest:
            raise VerificationError(f"blob {digest} from {repo.describe()} failed verification (the content "
                                    f"has digest {writer.digest}); nothing was stored", digest)
        await writer.commit(size, digest)
    except VerificationError:
        writer.abort_sync()
        raise
    finally:
        if not writer.closed:
            writer.close_sync()
