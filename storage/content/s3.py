"""The S3 content store: each blob is one object holding exactly its bytes.

Keys under the configured prefix:
- `blobs/<alg>/<encoded>`: a blob (ranged GETs and presigned redirects read it as is);
- `ingest/<ref>/state`: a writer's durable state (JSON): the multipart upload, its
  parts, the segments after them, the offset and the running hash's state;
- `ingest/<ref>/seg-<start>`: bytes accepted after the last part, when a flush
  came before a whole part had gathered (a registry PATCH of 1 MiB);
- `ingest/<ref>/data`: the multipart upload's key, until commit copies it (server
  side) to its digest's key;
- `ingest/<ref>/lease`: renewed while a writer is open, deleted when it is
  parked or closed: an ingest with a fresh lease is busy (gc leaves it).

A writer resumed in another process loads the state and continues the hash from
it (sha.py): nothing stored is read back for hashing. Only the segments
(less than one part) are read back, when they become part of the next part,
and not even that in the process that wrote them while memory allows.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

from .. import digests
from ..errors import BlobNotFound, DigestMismatch, SizeMismatch, StorageError
from .base import Blocking, ContentStore, Info, IngestInfo, Writer, check_ref
from .s3api import Credentials, S3Client, S3Error, find_credentials
from .sha import ResumableHash

MIN_PART = 5 * 1024 * 1024  # S3's minimum for every part but the last
PART = 8 * 1024 * 1024
LEASE = 120.0  # an ingest whose lease is younger than this is busy
PARKED_TAILS = 256 * 1024 * 1024  # segment bytes parked writers may keep in memory, all together


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint: str
    region: str


def parse_url(url: str) -> S3Location:
    """`s3://BUCKET[/PREFIX][?endpoint=URL&region=R]`"""
    u = urlsplit(url)
    if u.scheme != "s3" or not u.netloc:
        raise StorageError(f"bad storage URL {url!r}: want s3://BUCKET/PREFIX?endpoint=...&region=...")
    q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
    unknown = set(q) - {"endpoint", "region"}
    if unknown:
        raise StorageError(f"bad storage URL {url!r}: unknown parameter {sorted(unknown)[0]!r}")
    import os
    region = q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = q.get("endpoint") or f"https://s3.{region}.amazonaws.com"
    prefix = u.path.strip("/")
    return S3Location(u.netloc, f"{prefix}/" if prefix else "", endpoint, region)


@dataclass
class _State:
    """What `ingest/<ref>/state` holds."""
    algorithm: str
    upload: str | None = None  # the multipart upload of `ingest/<ref>/data`
    parts: list[tuple[int, str, int]] = field(default_factory=list)  # (number, etag, size)
    segments: list[tuple[int, int]] = field(default_factory=list)  # (start, size) after the parts
    hash: bytes = b""  # running hash state at `durable`
    started: float = field(default_factory=time.time)

    @property
    def parts_end(self) -> int:
        return sum(p[2] for p in self.parts)

    @property
    def durable(self) -> int:
        return self.parts_end + sum(s[1] for s in self.segments)

    def dump(self) -> bytes:
        return json.dumps({"v": 1, "algorithm": self.algorithm, "upload": self.upload, "parts": self.parts,
                           "segments": self.segments, "offset": self.durable,
                           "hash": base64.b64encode(self.hash).decode(), "started": self.started}).encode()

    @classmethod
    def load(cls, data: bytes) -> "_State":
        try:
            j = json.loads(data)
            st = cls(j["algorithm"], j["upload"], [tuple(p) for p in j["parts"]],
                     [tuple(s) for s in j["segments"]], base64.b64decode(j["hash"]), j["started"])
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(f"unreadable S3 ingest state: {e}") from None
        if st.durable != j["offset"]:
            raise StorageError("inconsistent S3 ingest state")
        return st

    def copy(self) -> "_State":
        return _State(self.algorithm, self.upload, list(self.parts), list(self.segments), self.hash, self.started)


@dataclass
class S3Parked:
    """A parked writer: its state, and the segment bytes while memory allows."""
    state: _State
    tail: bytes | None

    @property
    def offset(self) -> int:
        return self.state.durable


class S3Writer(Writer):
    def __init__(self, store: "S3Store", ref: str, anonymous: bool, state: _State, tail: bytes | None):
        self.s3 = store
        self.ref = ref
        self.anonymous = anonymous
        self.algorithm = state.algorithm
        self.state = state
        self._hash = ResumableHash(state.algorithm, state.hash or None)
        self._tail = tail if tail is not None else (b"" if not state.segments else None)  # segment bytes, if known
        self._pending = bytearray()  # accepted, not yet durable
        self.offset = state.durable
        self._closed = False
        self._lease: asyncio.Task | None = None
        self._touched = bool(state.durable or state.upload)  # objects under ingest/<ref>/ may exist
        self._leased = False

    # -- keys -----------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return self.s3.ingest_key(self.ref, name)

    @property
    def closed(self) -> bool:
        return self._closed

    def _start_lease(self, fresh: bool) -> None:
        async def renew() -> None:
            if not fresh:  # resumed from the store: say so before gc may look at it
                await self._put("lease", b"")
                self._leased = True
            while True:
                await asyncio.sleep(self.s3.lease / 3)
                await self._put("lease", b"")
                self._leased = True
        self._lease = asyncio.get_running_loop().create_task(renew())
        self._lease.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _stop_lease(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None

    async def _release_lease(self) -> None:
        self._stop_lease()
        if self._leased:
            self._leased = False
            await self.s3.client.delete(self._key("lease"))

    # -- accepting data ---------------------------------------------------------------------------
    @property
    def digest(self) -> str:
        h = self._hash.copy()
        h.update(bytes(self._pending))
        return f"{self.algorithm}:{h.hexdigest()}"

    def hash(self, data: bytes) -> None:
        """(Hashing happens as data becomes durable: the saved hash state then matches the saved offset.)"""

    def store(self, data: bytes) -> None:
        assert not self._closed, "writer is closed"
        self._pending += data
        self.offset += len(data)

    async def _tail_bytes(self) -> bytes:
        if self._tail is None:
            chunks = []
            for start, size in self.state.segments:
                data = await self.s3.client.get_bytes(self._key(f"seg-{start:016d}"))
                if data is None or len(data) != size:
                    raise StorageError(f"S3 ingest {self.ref}: segment at {start} is missing")
                chunks.append(data)
            self._tail = b"".join(chunks)
        return self._tail

    async def _absorb(self, data: bytes | bytearray) -> None:
        """Hash bytes on their way to becoming durable (off the loop)."""
        if data:
            await asyncio.get_running_loop().run_in_executor(None, self._hash.update, bytes(data))

    async def _put(self, name: str, body: bytes) -> None:
        self._touched = True
        await self.s3.client.put(self._key(name), body)

    async def _save(self, hashed: bool = True) -> None:
        """Write the state; `hashed`: the running hash covers exactly `state.durable` now."""
        if hashed:
            self.state.hash = self._hash.state()
        await self._put("state", self.state.dump())
        if not self._leased:  # from the first durable byte on, gc sees a writer holds it
            self._leased = True
            await self._put("lease", b"")

    async def _upload_part(self, body: bytes) -> None:
        """(the hash has absorbed `body` already)"""
        st = self.state
        if st.upload is None:
            self._touched = True
            st.upload = await self.s3.client.create_multipart(self._key("data"))
            await self._save(hashed=False)  # the upload is known before any part can be lost track of
        number = len(st.parts) + 1
        etag = await self.s3.client.upload_part(self._key("data"), st.upload, number, body)
        old = st.segments
        st.parts.append((number, etag, len(body)))
        st.segments = []
        self._tail = b""
        await self._save()
        if old:
            await self.s3.client.delete_many([self._key(f"seg-{s:016d}") for s, _ in old])

    async def drain(self) -> None:
        """Upload every whole part gathered."""
        while self.offset - self.state.parts_end >= self.s3.part_size:
            tail = await self._tail_bytes()
            take = self.s3.part_size - len(tail)
            piece = bytes(self._pending[:take])
            del self._pending[:take]
            await self._absorb(piece)
            await self._upload_part(tail + piece)

    async def flush(self) -> None:
        assert not self._closed, "writer is closed"
        await self.drain()
        if self._pending:
            piece = bytes(self._pending)
            self._pending.clear()
            await self._absorb(piece)
            start = self.state.durable
            await self._put(f"seg-{start:016d}", piece)
            self.state.segments.append((start, len(piece)))
            if self._tail is not None:
                self._tail += piece
            await self._save()

    async def commit(self, size: int | None, expected: str) -> Info:
        assert not self._closed, "writer is closed"
        try:
            if size is not None and size != self.offset:
                raise SizeMismatch(f"size mismatch: expected {size} bytes, got {self.offset}")
            alg = digests.parse(expected).algorithm
            await self.drain()
            await self._absorb(self._pending)
            if alg == self.algorithm:
                actual = f"{alg}:{self._hash.hexdigest()}"
                if actual != expected:
                    raise DigestMismatch(expected, actual)
            last = await self._tail_bytes() + bytes(self._pending)
            self._pending.clear()
            key = self.s3.blob_key(expected)
            if self.state.upload is None:
                if alg != self.algorithm:
                    self._check_other(alg, last, expected)
                await self.s3.client.put(key, last)
            else:
                if last:
                    await self._upload_part(last)
                data = self._key("data")
                await self.s3.client.complete_multipart(data, self.state.upload,
                                                        [(n, etag) for n, etag, _ in self.state.parts])
                self.state.upload = None
                if alg != self.algorithm:
                    await self._check_staged(alg, expected)
                await self.s3.client.copy(data, key, self.offset)
        except BaseException:
            await self.abort()
            raise
        await self._finish()
        return Info(expected, self.offset, time.time())

    def _check_other(self, alg: str, data: bytes, expected: str) -> None:
        actual = digests.of_bytes(data, alg)
        if actual != expected:
            raise DigestMismatch(expected, actual)

    async def _check_staged(self, alg: str, expected: str) -> None:
        """A digest of another algorithm than the running one: read the staged data back."""
        h = digests.hasher(alg)
        async for chunk in self.s3.read_key(self._key("data")):
            h.update(chunk)
        if f"{alg}:{h.hexdigest()}" != expected:
            raise DigestMismatch(expected, f"{alg}:{h.hexdigest()}")

    async def _finish(self) -> None:
        self._closed = True
        self._stop_lease()
        if self._touched:
            await self.s3.drop_ingest(self.ref)

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_lease()
        self._pending.clear()
        if self._touched:
            await self.s3.drop_ingest(self.ref, self.state.upload)

    async def park(self) -> S3Parked:
        try:
            await self.flush()
        finally:
            self._closed = True
            self._stop_lease()
        await self._release_lease()
        return self.s3.parked(self.state.copy(), self._tail)

    async def close(self) -> None:
        """Keep what was written (an anonymous writer's goes)."""
        if self.anonymous:
            await self.abort()
        elif not self._closed:
            await self.park()


class S3Blocking(Blocking):
    """The store's calls from worker threads, run on the store's loop."""

    def __init__(self, store: "S3Store"):
        self.store = store

    def _wait(self, coro):
        loop = self.store.loop
        if loop is None:
            coro.close()
            raise StorageError("the S3 store is not open")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise StorageError("blocking S3 call on the store's own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stat(self, digest: str) -> Info | None:
        return self._wait(self.store.stat(digest))

    def read_bytes(self, digest: str) -> bytes:
        return self._wait(self.store.read_bytes(digest))

    def delete(self, digest: str) -> bool:
        return self._wait(self.store.delete(digest))

    def delete_many(self, digests_: list[str]) -> None:
        self._wait(self.store.delete_many(digests_))

    def walk(self) -> Iterator[Info]:
        async def collect() -> list[Info]:
            return [i async for i in self.store.walk()]
        return iter(self._wait(collect()))

    def ingests(self) -> list[IngestInfo]:
        return self._wait(self.store.ingests())

    def ingest(self, ref: str) -> IngestInfo | None:
        return self._wait(self.store.ingest(ref))

    def abort_ingest(self, ref: str, force: bool = False) -> bool:
        return self._wait(self.store.abort_ingest(ref, force))


class S3Store(ContentStore):
    name = "s3"

    def __init__(self, url: str, access_key: str | None = None, secret_key: str | None = None,
                 session_token: str | None = None, part_size: int = PART, redirect: bool = False,
                 creds: Credentials | None = None):
        import os
        self.location = loc = parse_url(url)
        if part_size < MIN_PART:
            raise StorageError(f"S3 part size {part_size} is below S3's minimum of {MIN_PART} bytes")
        self.part_size = part_size
        self.redirect = redirect
        creds = creds or find_credentials(access_key, secret_key, session_token)
        self.client = S3Client(loc.endpoint, loc.region, loc.bucket, creds, os.environ.get("AWS_CA_BUNDLE") or None)
        self.prefix = loc.prefix
        self.loop: asyncio.AbstractEventLoop | None = None
        self._blocking = S3Blocking(self)
        self._parked_tails = 0
        self.lease = LEASE

    def describe(self) -> str:
        return f"s3://{self.location.bucket}/{self.prefix} at {self.location.endpoint}"

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            if not await self.client.bucket_exists():
                raise StorageError(f"S3 bucket {self.location.bucket!r} does not exist at {self.location.endpoint} "
                                   "(or these credentials may not use it)")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.client.close()
        self.loop = None

    @property
    def blocking(self) -> S3Blocking:
        return self._blocking

    # -- keys ---------------------------------------------------------------------------------------
    def blob_key(self, digest: str) -> str:
        d = digests.parse(digest)
        return f"{self.prefix}blobs/{d.algorithm}/{d.encoded}"

    def ingest_key(self, ref: str, name: str = "") -> str:
        return f"{self.prefix}ingest/{ref}/{name}"

    # -- provider -----------------------------------------------------------------------------------
    async def stat(self, digest: str) -> Info | None:
        o = await self.client.head(self.blob_key(digest))
        return None if o is None else Info(digest, o.size, o.modified)

    async def read_key(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        resp = await self.client.get(key, offset, length)
        if resp is None:
            raise BlobNotFound(key)
        try:
            async for chunk in resp.content.iter_chunked(1 << 20):
                self.client.bytes_read += len(chunk)
                yield chunk
        finally:
            resp.release()

    async def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        try:
            async for chunk in self.read_key(self.blob_key(digest), offset, length):
                yield chunk
        except BlobNotFound:
            raise BlobNotFound(digest) from None

    async def read_bytes(self, digest: str) -> bytes:
        data = await self.client.get_bytes(self.blob_key(digest))
        if data is None:
            raise BlobNotFound(digest)
        return data

    def url(self, digest: str, expires: float = 900) -> str | None:
        return self.client.presign(self.blob_key(digest), int(expires)) if self.redirect else None

    async def put(self, data: bytes, expected: str) -> Info:
        actual = digests.of_bytes(data, digests.parse(expected).algorithm)
        if actual != expected:
            raise DigestMismatch(expected, actual)
        await self.client.put(self.blob_key(expected), data)
        return Info(expected, len(data), time.time())

    # -- ingester -----------------------------------------------------------------------------------
    def parked(self, state: _State, tail: bytes | None) -> S3Parked:
        """Keep the segment bytes in memory while all parked writers together stay under the budget."""
        if tail and self._parked_tails + len(tail) <= PARKED_TAILS:
            self._parked_tails += len(tail)
            p = S3Parked(state, tail)
            weakref.finalize(p, self._release_tail, len(tail))
            return p
        return S3Parked(state, None if state.segments else b"")

    def _release_tail(self, n: int) -> None:
        self._parked_tails -= n

    async def writer(self, ref: str | None = None, algorithm: str = "sha256", resume: Any = None) -> S3Writer:
        anonymous = ref is None
        if ref is None:
            import secrets
            ref = f"anon-{secrets.token_hex(12)}"
        check_ref(ref)
        fresh = True
        if isinstance(resume, S3Parked) and resume.state.algorithm == algorithm and await self._current(ref, resume):
            state, tail = resume.state.copy(), resume.tail
        else:
            state, tail = None, None
            raw = None if anonymous else await self.client.get_bytes(self.ingest_key(ref, "state"))
            if raw is not None:
                state = _State.load(raw)
                fresh = False
                if state.algorithm != algorithm:
                    raise StorageError(f"ingest {ref} is hashed with {state.algorithm}, not {algorithm}")
            state = state or _State(algorithm)
        w = S3Writer(self, ref, anonymous, state, tail)
        w._start_lease(fresh)
        return w

    async def _current(self, ref: str, parked: S3Parked) -> bool:
        """Whether the stored state is still the one parked here (another process,
        a replica, may have gone on with the upload since): its ETag is its MD5."""
        o = await self.client.head(self.ingest_key(ref, "state"))
        if not parked.state.durable and not parked.state.upload:
            return o is None
        return o is not None and o.etag == hashlib.md5(parked.state.dump()).hexdigest()

    async def _ingest_objects(self, ref: str | None = None, uploads: bool = True) -> dict[str, list]:
        """ref -> [newest modification, lease time (0: none), multipart uploads]"""
        base = self.ingest_key(ref) if ref else f"{self.prefix}ingest/"
        out: dict[str, list] = {}
        async for o in self.client.list(base):
            r = o.key[len(f"{self.prefix}ingest/"):].split("/", 1)[0]
            e = out.setdefault(r, [0.0, 0.0, []])
            e[0] = max(e[0], o.modified)
            if o.key.endswith("/lease"):
                e[1] = o.modified
        for key, upload, initiated in await self.client.list_multipart(base) if uploads else []:
            r = key[len(f"{self.prefix}ingest/"):].split("/", 1)[0]
            e = out.setdefault(r, [0.0, 0.0, []])
            e[0] = max(e[0], initiated)
            e[2].append((key, upload))
        return out

    def _busy(self, lease: float) -> bool:
        return time.time() - lease < self.lease

    async def ingest(self, ref: str) -> IngestInfo | None:
        check_ref(ref)
        raw = await self.client.get_bytes(self.ingest_key(ref, "state"))
        if raw is None:
            return None
        state = _State.load(raw)
        e = (await self._ingest_objects(ref, uploads=False)).get(ref, [time.time(), 0.0])
        return IngestInfo(ref, e[0], self._busy(e[1]), state.durable)

    async def ingests(self) -> list[IngestInfo]:
        return [IngestInfo(ref, e[0], self._busy(e[1])) for ref, e in (await self._ingest_objects()).items()]

    async def abort_ingest(self, ref: str, force: bool = False) -> bool:
        check_ref(ref)
        e = (await self._ingest_objects(ref)).get(ref)
        if e is None:
            return True
        if not force and self._busy(e[1]):
            return False
        await self.drop_ingest(ref, None, e[2])
        return True

    async def drop_ingest(self, ref: str, upload: str | None = None,
                          uploads: list[tuple[str, str]] | None = None) -> None:
        """Every object of an ingest (its multipart upload aborted), the state last."""
        data = self.ingest_key(ref, "data")
        if upload is not None:
            await self.client.abort_multipart(data, upload)
        for key, other in uploads or []:
            await self.client.abort_multipart(key, other)
        state = self.ingest_key(ref, "state")
        keys = [o.key async for o in self.client.list(self.ingest_key(ref))]
        rest = [k for k in keys if k != state]
        if rest:
            await self.client.delete_many(rest)
        if state in keys:
            await self.client.delete(state)

    # -- manager ------------------------------------------------------------------------------------
    async def delete(self, digest: str) -> bool:
        key = self.blob_key(digest)
        if await self.client.head(key) is None:
            return False
        await self.client.delete(key)
        return True

    async def delete_many(self, digests_: list[str]) -> None:
        await self.client.delete_many([self.blob_key(d) for d in digests_])

    async def walk(self) -> AsyncIterator[Info]:
        base = f"{self.prefix}blobs/"
        async for o in self.client.list(base):
            alg, _, encoded = o.key[len(base):].partition("/")
            digest = f"{alg}:{encoded}"
            if digests.is_valid(digest):
                yield Info(digest, o.size, o.modified)


__all__ = ["S3Store", "S3Writer", "S3Parked", "S3Error", "parse_url"]
