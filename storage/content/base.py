"""The content-store seam, in containerd's split.

- provider: `stat`, `read` (a byte range, streamed), `read_bytes`, and where the
  backend has them a `local_path` (for sendfile) or a presigned `url` (for redirects);
- ingester: `writer(ref)` gives a resumable writer (offset, running digest);
  `commit(size, expected)` is the only way anything becomes visible, and a
  wrong size or digest leaves nothing behind; `abort` drops it;
- manager: `delete`, `walk`, and the ingests in progress (`ingests`, `abort_ingest`).

The interface is async (the registry and its client are aiohttp programs).
Code that runs in worker threads (metadata transactions, garbage collection)
uses the `blocking` view, which does the same through the store's loop.

Two rules the registry's garbage collection relies on, whatever the backend:
- a commit leaves the blob with a fresh `modified` time, also when it was
  already stored (so a collector honouring a grace period never takes a blob
  that is being linked);
- an ingest held by an open writer reports `busy` (the directory store: a
  shared flock; S3: a lease its writer renews), and `abort_ingest` leaves it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from ..errors import StorageError

_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def check_ref(ref: str) -> str:
    """An ingest ref names a file or an object key: a short token of safe characters."""
    if not ref or len(ref) > 128 or not set(ref) <= _ID_OK:
        raise StorageError(f"invalid ingest ref {ref!r}")
    return ref


@dataclass(frozen=True)
class Info:
    """What a provider knows of a stored blob."""
    digest: str
    size: int
    modified: float  # seconds since the epoch of the last commit (gc's grace counts from it)


@dataclass(frozen=True)
class IngestInfo:
    """An ingest in progress (or abandoned)."""
    ref: str
    updated: float  # last time data or state was written
    busy: bool  # an open writer holds it: never collect it
    offset: int | None = None  # bytes it holds, when known without reading more


class Writer(ABC):
    """A resumable writer. `hash` and `store` are the two halves of `write`
    (plain methods: they may run in worker threads, each half seeing the data
    in order); the rest is async because a backend may go over the network."""

    ref: str
    algorithm: str
    offset: int  # bytes accepted so far
    # store() does all the work at once and keeps no reference to `data`: a caller may
    # reuse its buffer and need not drain() (the registry's socket-to-disk path takes only these)
    stores_at_once: bool = False

    @property
    @abstractmethod
    def digest(self) -> str:
        """The running digest of the bytes [0, offset)."""

    @abstractmethod
    def hash(self, data: bytes) -> None: ...

    @abstractmethod
    def store(self, data: bytes) -> None: ...

    def write(self, data: bytes) -> None:
        self.hash(data)
        self.store(data)

    async def drain(self) -> None:
        """Let buffered data go out (S3: full parts); call it between batches."""

    @abstractmethod
    async def flush(self) -> None:
        """Make every accepted byte durable: a writer resumed from this ref (in
        any process, after any crash) continues at `offset`."""

    @abstractmethod
    async def commit(self, size: int | None, expected: str) -> Info:
        """Verify size (when given) and digest, then publish the blob. On a
        mismatch the data is dropped and DigestMismatch/SizeMismatch raised."""

    @abstractmethod
    async def abort(self) -> None:
        """Drop the data and the ingest."""

    @abstractmethod
    async def park(self) -> Any:
        """Make the data durable and let go of every resource, keeping only
        what resumes it cheaply (the running hash): `store.writer(ref, resume=...)`."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of every resource, keeping what was flushed (an anonymous writer's data goes)."""

    @property
    @abstractmethod
    def closed(self) -> bool: ...


class ContentStore(ABC):
    """A backend for blobs: see the module's docstring."""

    name: str = "content store"

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Bind to the running event loop (network backends open their session here)."""

    async def close(self) -> None:
        """Release sessions and threads."""

    def describe(self) -> str:
        return self.name

    # -- provider -----------------------------------------------------------------------------
    @abstractmethod
    async def stat(self, digest: str) -> Info | None: ...

    async def has(self, digest: str) -> bool:
        return await self.stat(digest) is not None

    @abstractmethod
    def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [offset, offset+length) in chunks; BlobNotFound when absent."""

    async def read_bytes(self, digest: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(digest)])

    def local_path(self, digest: str) -> Path | None:
        """A file holding exactly the blob's bytes, for sendfile (None: not this backend)."""
        return None

    def url(self, digest: str, expires: float = 900) -> str | None:
        """A presigned URL a client may GET the blob from (None: not this backend)."""
        return None

    async def put(self, data: bytes, expected: str) -> Info:
        """Store small content in one step (manifests, configs), verified."""
        w = await self.writer()
        try:
            w.write(data)
            return await w.commit(len(data), expected)
        except BaseException:
            if not w.closed:
                await w.abort()
            raise

    # -- ingester ------------------------------------------------------------------------------
    @abstractmethod
    async def writer(self, ref: str | None = None, algorithm: str = "sha256", resume: Any = None) -> Writer:
        """The resumable writer of `ref` (a new anonymous one without): it continues
        after whatever was flushed before, `resume` (what park() returned) saving
        the work of finding that out."""

    @abstractmethod
    async def ingest(self, ref: str) -> IngestInfo | None:
        """The ingest of `ref` with its offset, if it exists."""

    async def ingest_offset(self, ref: str, resume: Any = None) -> int:
        """Bytes the ingest of `ref` holds (0: none yet). `resume` (what park()
        returned here) answers only while the store says it is still current:
        another process (a replica) may have gone on with the ingest since."""
        info = await self.ingest(ref)
        return 0 if info is None or info.offset is None else info.offset

    @abstractmethod
    async def ingests(self) -> list[IngestInfo]:
        """Every ingest, for garbage collection (offsets may be unknown)."""

    @abstractmethod
    async def abort_ingest(self, ref: str, force: bool = False) -> bool:
        """Drop an ingest unless a writer holds it (`force`: even then); True when it is gone."""

    # -- manager -------------------------------------------------------------------------------
    @abstractmethod
    async def delete(self, digest: str) -> bool: ...

    async def delete_many(self, digests: list[str]) -> None:
        for d in digests:
            await self.delete(d)

    @abstractmethod
    def walk(self) -> AsyncIterator[Info]:
        """Every stored blob."""

    # -- for worker threads --------------------------------------------------------------------
    @property
    @abstractmethod
    def blocking(self) -> "Blocking":
        """The same operations, callable from a worker thread (never from the loop)."""


class Blocking(ABC):
    """A content store's operations for code running in worker threads:
    metadata transactions (is the blob still there?) and garbage collection."""

    @abstractmethod
    def stat(self, digest: str) -> Info | None: ...

    def has(self, digest: str) -> bool:
        return self.stat(digest) is not None

    @abstractmethod
    def read_bytes(self, digest: str) -> bytes: ...

    @abstractmethod
    def delete(self, digest: str) -> bool: ...

    @abstractmethod
    def delete_many(self, digests: list[str]) -> None: ...

    @abstractmethod
    def walk(self) -> Iterator[Info]: ...

    @abstractmethod
    def ingests(self) -> list[IngestInfo]: ...

    @abstractmethod
    def ingest(self, ref: str) -> IngestInfo | None: ...

    @abstractmethod
    def abort_ingest(self, ref: str, force: bool = False) -> bool: ...
