"""Downloading one blob into a blob store, verified, resumable.

The body streams into a resumable blob writer keyed by the digest, so a
dropped connection (or a killed process) continues with `Range:` from what
is already on disk; the writer hashes as it writes and the blob only enters
the store when the writer's commit finds digest and size right.

The request is made by the async session's rules (scheme, TLS context,
credentials, token) but the body is read in a worker thread with a blocking
socket and one reused buffer: socket reads, hashing and file writes all
release the GIL there, so several blobs use both cores, where reading through
the event loop cost about half again as much CPU per byte. Blobs are written
with the directory content store's writer (O_DIRECT where the filesystem allows it): fresh
page-cache pages are slow to fill on the machines this runs on, and the fsync
that makes each blob durable then has little left to do.
"""
from __future__ import annotations

import asyncio
import fcntl
import http.client
import os
import ssl
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin, urlsplit

from storage import digests
from storage.blobs import BlobStore
from storage.content.directory import DirectoryStore
from storage.content.dirwriter import FileWriter

from .errors import ConnectionDropped, ProtocolError, VerificationError
from .options import ClientOptions
from .remote import Repository
from .session import detail_of, retry_after, retryable_status
from .wire_std import Cancel, settled

BUFFER = 1 << 20
MAX_REDIRECTS = 5
Report = Callable[[int], None]


@dataclass
class _Outcome:
    """What one GET attempt in the worker thread came to."""
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""            # error bodies only
    dropped: BaseException | None = None   # the connection broke (resume from writer.offset)
    too_long: bool = False
    bad_range: str = ""


def _ssl_context(ssl_setting) -> ssl.SSLContext | None:
    if isinstance(ssl_setting, ssl.SSLContext):
        return ssl_setting
    if ssl_setting is False:
        return ssl._create_unverified_context()  # the session already decided: --insecure or loopback
    return ssl.create_default_context()


def _blocking_get(url: str, headers: dict[str, str], ssl_setting, timeout: float, writer: FileWriter, size: int,
                  start: int, cancel: Cancel, progress: Callable[[int], None]) -> _Outcome:
    """GET `url` and append the body to `writer` (runs in a worker thread)."""
    headers = dict(headers)
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        u = urlsplit(url)
        if u.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                u.hostname, u.port, timeout=timeout, context=_ssl_context(ssl_setting))
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            conn.connect()
            cancel.sock = conn.sock
            if cancel.stop.is_set():
                return _Outcome(dropped=ConnectionAbortedError("cancelled"))
            conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""), headers=headers)
            resp = conn.getresponse()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status in (301, 302, 303, 307, 308) and "location" in hdrs:
                url = urljoin(url, hdrs["location"])  # (its body is not read: the connection closes below)
                if urlsplit(url)[:2] != origin:
                    headers.pop("Authorization", None)  # never hand credentials to another origin
                continue
            if resp.status not in (200, 206):
                return _Outcome(resp.status, hdrs, resp.read(65536))
            skip = start if (start and resp.status == 200) else 0  # the registry ignored Range
            got = hdrs.get("content-range", "")
            if resp.status == 206 and not got.startswith(f"bytes {start}-"):
                return _Outcome(resp.status, hdrs, bad_range=f"asked for bytes from {start}, got range {got!r}")
            return _stream(resp, writer, size, skip, cancel, progress, hdrs)
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            return _Outcome(dropped=e)
        finally:
            cancel.sock = None
            conn.close()
    return _Outcome(310, {}, b"too many redirects")


def _stream(resp: http.client.HTTPResponse, writer: FileWriter, size: int, skip: int, cancel: Cancel,
            progress: Callable[[int], None], hdrs: dict[str, str]) -> _Outcome:
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    reported = writer.offset
    try:
        while True:
            if cancel.stop.is_set():
                return _Outcome(resp.status, hdrs, dropped=ConnectionAbortedError("cancelled"))
            n = resp.readinto(view)
            if not n:
                break
            chunk = view[:n]
            if skip:
                cut = min(skip, n)
                skip -= cut
                chunk = chunk[cut:]
                if not len(chunk):
                    continue
            if writer.offset + len(chunk) > size:
                return _Outcome(resp.status, hdrs, too_long=True)
            writer.write(chunk)
            if writer.offset - reported >= 4 * BUFFER:
                reported = writer.offset
                progress(reported)
    except (OSError, http.client.HTTPException, ssl.SSLError) as e:
        return _Outcome(resp.status, hdrs, dropped=e)
    return _Outcome(resp.status, hdrs)


async def download_blob(repo: Repository, digest: str, size: int, blobs: BlobStore,
                        options: ClientOptions, report: Report, pool: Executor | None = None) -> bool:
    """Fetch `digest` into `blobs`, verified. False when it was already there.
    `pool` runs the blocking body reads (one thread per blob in flight)."""
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
    url = sess.url(f"/v2/{repo.path}/blobs/{digest}")
    failures = 0
    auth_retried = False

    def progress(done: int) -> None:
        loop.call_soon_threadsafe(report, done)

    try:
        # (a killed pull may have left it all on disk already; a drop may come right at the end)
        while writer.offset < size or size == 0:
            report(writer.offset)
            start = writer.offset
            headers = {"User-Agent": options.user_agent}
            if start:
                headers["Range"] = f"bytes={start}-"
            authz = await sess.auth.header(sess.transport, repo.scopes, sess.ssl)
            if authz:
                headers["Authorization"] = authz
            cancel = Cancel()
            fut = loop.run_in_executor(pool, _blocking_get, url, headers, sess.ssl, options.read_timeout,
                                       writer, size, start, cancel, progress)
            try:
                out = await asyncio.shield(fut)
            except asyncio.CancelledError:
                cancel()
                await settled(fut)  # the thread must let go of the writer before it is closed
                raise
            if out.too_long:
                raise _too_long(repo, digest, size)
            if out.bad_range:
                raise ProtocolError(f"blob {digest} from {repo.describe()}: {out.bad_range}")
            if out.status == 401 and not auth_retried:
                c = sess.auth.on_challenge(out.headers.get("www-authenticate"))
                if c is not None and (c.scheme == "bearer" or not sess.auth.creds.empty):
                    auth_retried = True
                    sess.auth.forget(repo.scopes)
                    continue
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
                                            f"({out.dropped.__class__.__name__}: {out.dropped})")
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
