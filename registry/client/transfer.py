"""Moving one blob: download into a blob store, upload from a source.

Downloads stream into a resumable blob writer keyed by the digest, so a
dropped connection (or a killed process) continues with `Range:` from what
is already on disk; the writer hashes as it writes and the blob only enters
the store when digest and size match. Uploads put small blobs in one PUT and
send large ones as PATCH chunks; after a drop they ask the registry for its
offset (GET upload status -> Range) and continue from there, starting over
only when the registry has lost or refused the session.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
from typing import AsyncIterator, Callable, Protocol

import aiohttp

from storage import digests
from storage.blobs import BlobStore
from storage.errors import DigestMismatch, SizeMismatch

from .errors import ClientError, ConnectionDropped, ProtocolError, UploadError, VerificationError
from .options import ClientOptions
from .remote import Repository, with_digest
from .session import RETRYABLE_EXC, error_detail, retry_after, retryable_status

CHUNK = 1 << 20
Report = Callable[[int], None]   # bytes done so far


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix."""

    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.wait = wait


# -- downloads -------------------------------------------------------------------
async def download_blob(repo: Repository, digest: str, size: int, blobs: BlobStore,
                        options: ClientOptions, report: Report) -> bool:
    """Fetch `digest` into `blobs`, verified. False when it was already there."""
    if blobs.has(digest):
        return False
    d = digests.parse(digest)
    ingest_id = f"pull-{d.algorithm}-{d.encoded}"
    lock_path = blobs.ingest_dir / f"lock-{ingest_id}"
    lock_fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)  # another pull of the same blob
        if blobs.has(digest):
            return False
        await _download_locked(repo, digest, size, blobs, ingest_id, options, report)
        lock_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(lock_fd)


def _too_long(repo: Repository, digest: str, size: int) -> VerificationError:
    return VerificationError(f"blob {digest} from {repo.describe()}: more data than the {size} bytes its "
                             f"descriptor announces; nothing was stored", digest)


async def _download_locked(repo: Repository, digest: str, size: int, blobs: BlobStore, ingest_id: str,
                           options: ClientOptions, report: Report) -> None:
    writer = blobs.writer(ingest_id)
    if writer.offset > size:  # leftovers of something else: start clean
        writer.abort()
        writer = blobs.writer(ingest_id)
    loop = asyncio.get_running_loop()
    failures = 0
    try:
        fetch = writer.offset < size or size == 0
        while fetch:
            report(writer.offset)
            start = writer.offset
            resp = await repo.open_blob(digest, start)
            async with resp:
                if start and resp.status == 200:  # the registry ignored Range: take it all again
                    writer.abort()
                    writer = blobs.writer(ingest_id)
                elif start and resp.status == 206:
                    cr = resp.headers.get("Content-Range", "")
                    if not cr.startswith(f"bytes {start}-"):
                        raise ProtocolError(f"blob {digest}: asked for bytes from {start}, got range {cr!r}")
                elif resp.status not in (200, 206):
                    raise ProtocolError(f"blob {digest}: unexpected status {resp.status}")
                pending: asyncio.Future | None = None
                buf = bytearray()
                try:
                    async for piece in resp.content.iter_any():
                        buf += piece
                        if len(buf) >= CHUNK:
                            if pending is not None:
                                await pending
                            if writer.offset + len(buf) > size:
                                raise _too_long(repo, digest, size)
                            pending = loop.run_in_executor(None, writer.write, bytes(buf))
                            buf.clear()
                            report(writer.offset)
                    if pending is not None:
                        await pending
                        pending = None
                except RETRYABLE_EXC as e:
                    if pending is not None:
                        await pending
                    if buf and writer.offset + len(buf) <= size:
                        writer.write(bytes(buf))  # keep what did arrive
                    writer.flush()
                    failures += 1
                    if failures > options.retries:
                        raise ConnectionDropped(f"blob {digest} from {repo.describe()}: the connection kept "
                                                f"dropping ({e.__class__.__name__})") from e
                    report(writer.offset)
                    await repo.session.backoff(failures, None)
                    continue
                if writer.offset + len(buf) > size:
                    raise _too_long(repo, digest, size)
                if buf:
                    writer.write(bytes(buf))
            if writer.offset >= size:
                break
            failures += 1  # a clean end short of the size: ask for the rest
            if failures > options.retries:
                break
        report(writer.offset)
        try:
            await loop.run_in_executor(None, writer.commit, digest, size)
        except (DigestMismatch, SizeMismatch) as e:
            raise VerificationError(f"blob {digest} from {repo.describe()} failed verification ({e}); "
                                    f"nothing was stored", digest) from None
    except VerificationError:
        writer.abort()
        raise
    finally:
        writer.close()


# -- upload sources ----------------------------------------------------------------
class BlobSource(Protocol):
    size: int

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]: ...

    def check(self) -> None: ...


class FileSource:
    """A blob file of a local store: already verified when it was stored."""

    def __init__(self, path: os.PathLike | str, size: int):
        self.path = path
        self.size = size

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        f = open(self.path, "rb")
        try:
            f.seek(start)
            left = end - start
            while left > 0:
                data = await asyncio.to_thread(f.read, min(4 * CHUNK, left))
                if not data:
                    raise UploadError(f"{self.path} is shorter than {self.size} bytes")
                left -= len(data)
                yield data
        finally:
            f.close()

    def check(self) -> None:
        pass


class RemoteSource:
    """A blob read from a registry while it is uploaded to another one; hashed
    on the way when it flows from the start, so bad bytes never get committed."""

    def __init__(self, repo: Repository, digest: str, size: int):
        self.repo = repo
        self.digest = digest
        self.size = size
        self._h = digests.hasher(digests.parse(digest).algorithm)
        self._hashed = 0
        self._hash_valid = True
        self.error: BaseException | None = None

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        if start != self._hashed:
            self._hash_valid = False
        resp = await self.repo.open_blob(self.digest, start)
        try:
            skip = start if resp.status == 200 else 0
            pos = start
            async for piece in resp.content.iter_any():
                if skip:
                    cut = min(skip, len(piece))
                    piece, skip = piece[cut:], skip - cut
                    if not piece:
                        continue
                piece = piece[: end - pos]
                if not piece:
                    break
                if self._hash_valid and pos == self._hashed:
                    self._h.update(piece)
                    self._hashed += len(piece)
                pos += len(piece)
                yield piece
                if pos >= end:
                    break
            if pos < end:
                raise ConnectionDropped(f"blob {self.digest} from {self.repo.describe()} ended early")
            if end == self.size:
                self.check()
        except BaseException as e:
            self.error = e
            raise
        finally:
            resp.release()

    def check(self) -> None:
        if self._hash_valid and self._hashed == self.size:
            actual = f"{self._h.name}:{self._h.hexdigest()}"
            if actual != self.digest:
                raise VerificationError(f"blob {self.digest} from {self.repo.describe()} has digest {actual}; "
                                        f"not copied", self.digest)


def _counted(source: BlobSource, start: int, end: int, report: Report) -> Callable[[], AsyncIterator[bytes]]:
    async def body() -> AsyncIterator[bytes]:
        done = start
        async for chunk in source.chunks(start, end):
            yield chunk
            done += len(chunk)
            report(done)
    return body


# -- uploads -----------------------------------------------------------------------
async def upload_blob(repo: Repository, digest: str, size: int, source: BlobSource, options: ClientOptions,
                      report: Report, location: str | None = None) -> None:
    """Upload `source` as `digest`, resuming at the registry's offset after drops."""
    if location is None:
        location, _ = await repo.start_upload()
    assert location is not None
    offset = 0
    failures = 0
    while True:
        try:
            if offset == 0 and size <= options.monolithic_max:
                await _put(repo, location, digest, source, size, report, with_body=True)
                return
            while offset < size:
                end = min(size, offset + options.chunk_size)
                location = await _patch(repo, location, digest, source, offset, end, report)
                offset = end
            await _put(repo, location, digest, source, size, report, with_body=False)
            return
        except _Retry as e:
            if isinstance(getattr(source, "error", None), VerificationError):
                raise source.error  # type: ignore[misc]
            failures += 1
            if failures > options.retries:
                raise UploadError(f"blob {digest} to {repo.describe()}: giving up after {failures} attempts "
                                  f"({e})") from None
            await repo.session.backoff(failures, e.wait)
            if await _exists(repo, digest):
                return  # the last attempt did land
            status = await repo.upload_status(location)
            if status is None or status[0] > size:
                location, _ = await repo.start_upload()
                assert location is not None
                offset = 0
            else:
                offset, location = status
            report(offset)


async def _exists(repo: Repository, digest: str) -> bool:
    try:
        return await repo.blob_size(digest) is not None
    except ClientError:
        return False


async def _send(repo: Repository, method: str, url: str, headers: dict, data) -> aiohttp.ClientResponse:
    try:
        resp = await repo.session.request(method, url, scopes=repo.scopes, headers=headers, data=data, retries=0)
    except ConnectionDropped as e:
        raise _Retry(str(e)) from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise _Retry(f"{e.__class__.__name__}: {e}") from None
    if retryable_status(resp.status):
        wait = retry_after(resp.headers)
        resp.release()
        raise _Retry(f"{method} answered {resp.status}", wait)
    return resp


async def _patch(repo: Repository, location: str, digest: str, source: BlobSource, start: int, end: int,
                 report: Report) -> str:
    headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end - 1}",
               "Content-Length": str(end - start)}
    resp = await _send(repo, "PATCH", location, headers, _counted(source, start, end, report))
    async with resp:
        if resp.status == 416:
            raise _Retry("registry refused the range")
        if resp.status != 202:
            await _upload_failed(repo, resp, digest)
        return repo._absolute(resp.headers.get("Location") or location, "PATCH")


async def _put(repo: Repository, location: str, digest: str, source: BlobSource, size: int, report: Report,
               with_body: bool) -> None:
    if with_body:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        data = _counted(source, 0, size, report) if size else b""
    else:
        source.check()
        headers = {"Content-Length": "0"}
        data = b""
    resp = await _send(repo, "PUT", with_digest(location, digest), headers, data)
    async with resp:
        if resp.status not in (201, 204):
            await _upload_failed(repo, resp, digest)
    report(size)


async def _upload_failed(repo: Repository, resp: aiohttp.ClientResponse, digest: str) -> None:
    if resp.status in (401, 403):
        await repo.session.raise_for_status(resp, f"blob {digest} to {repo.describe()}", repo.describe())
    detail = await error_detail(resp)
    if "digest" in detail.lower() and resp.status == 400:
        raise VerificationError(f"blob {digest}: {repo.registry} says the uploaded content does not match "
                                f"({detail})", digest)
    if resp.status in (400, 404):  # upload session unknown or invalid: start over
        raise _Retry(f"{resp.status} {detail}")
    raise UploadError(f"blob {digest} to {repo.describe()}: {repo.registry} answered {resp.status}"
                      f"{': ' + detail if detail else ''}")
