"""Uploading one blob from a source (a local blob file, or another registry).

Small blobs go in one PUT, large ones as PATCH chunks; after a drop the
registry is asked for its offset (GET upload status -> Range) and the upload
continues from there, starting over only when the registry has lost or
refused the session. Local files are sent with sendfile(2) (wire.FileBody).
"""
from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator, Callable, Protocol

from storage import digests

from . import wire
from .errors import ClientError, ConnectionDropped, Unreachable, UploadError, VerificationError
from .options import ClientOptions
from .remote import Repository, with_digest
from .session import error_detail, retry_after, retryable_status

CHUNK = 1 << 20
Report = Callable[[int], None]   # bytes done so far


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix
    (`restart`: in a new upload session, this one's offset is not to be trusted)."""

    def __init__(self, why: str, wait: float | None = None, restart: bool = False):
        super().__init__(why)
        self.wait = wait
        self.restart = restart


# -- upload sources ----------------------------------------------------------------
class BlobSource(Protocol):
    size: int

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]: ...

    def check(self) -> None: ...


class FileSource:
    """A blob file of a local store: already verified when it was stored, so it
    is sent as is, with sendfile(2) where the connection allows it."""

    def __init__(self, path: os.PathLike | str, size: int):
        self.path = path
        self.size = size

    def body(self, start: int, end: int, report: Report) -> wire.FileBody:
        return wire.FileBody(str(self.path), start, end, report)

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
            async for piece in resp.chunks():
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


def _counted(source: BlobSource, start: int, end: int, report: Report) -> Callable[[], object]:
    """A body factory (a request may be sent again, so each attempt gets a new body)."""
    if hasattr(source, "body"):
        return lambda: source.body(start, end, report)  # type: ignore[attr-defined]

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
    recover = restart = False
    while True:
        try:
            if recover:   # after a failure: where does the registry stand?
                if await _exists(repo, digest):
                    report(size)
                    return  # the last attempt did land
                status = None if restart else await _status(repo, location)
                if status is None or status[0] > size:
                    location = await _start(repo)
                    offset = 0
                else:
                    offset, location = status
                report(offset)
                recover = False
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
            recover, restart = True, e.restart


async def _exists(repo: Repository, digest: str) -> bool:
    try:
        return await repo.blob_size(digest) is not None
    except (Unreachable, ConnectionDropped) as e:
        raise _Retry(str(e)) from None
    except ClientError:
        return False


async def _start(repo: Repository) -> str:
    try:
        location, _ = await repo.start_upload()
    except (Unreachable, ConnectionDropped) as e:
        raise _Retry(str(e)) from None
    assert location is not None
    return location


async def _status(repo: Repository, location: str) -> tuple[int, str] | None:
    try:
        return await repo.upload_status(location)
    except (Unreachable, ConnectionDropped) as e:
        raise _Retry(str(e)) from None


async def _send(repo: Repository, method: str, url: str, headers: dict, data) -> wire.Response:
    try:
        resp = await repo.session.request(method, url, scopes=repo.scopes, headers=headers, data=data, retries=0)
    except (ConnectionDropped, Unreachable) as e:
        raise _Retry(str(e)) from None
    except (wire.TransportError, OSError, asyncio.TimeoutError) as e:
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
            raise _Retry("registry refused the range", restart=True)
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


async def _upload_failed(repo: Repository, resp: wire.Response, digest: str) -> None:
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
