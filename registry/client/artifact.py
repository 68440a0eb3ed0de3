"""Artifacts: manifests and blobs that are not images of the local store.

The builder's cache is one (builder/CACHE.md): an OCI manifest whose config
is the cache's own document and whose layers are the cached layers. It is
read lazily (the manifest and its config first, a blob only when a build
needs it) and written with the blobs where they are: files of the local
store, or blobs of another repository (mounted or streamed across, and only
when the destination lacks them).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from storage import digests, references
from storage.blobs import BlobStore
from storage.model import Descriptor, Manifest, Platform

from .credentials import CredentialStore
from .download import download_blob
from .errors import ClientError, VerificationError
from .options import ClientOptions, Progress, PushResult, no_progress
from .pulling import resolve_image
from .pushing import push_blob
from .remote import Repository
from .session import RegistrySession
from .tasks import run_all, run_sync
from .upload import FileSource, RemoteSource

MAX_CONFIG = 16 << 20


@dataclass
class Fetched:
    reference: str     # normalized
    manifest: Manifest
    config: bytes      # the config blob, verified


@dataclass
class InRepository:
    """A blob that lives in a repository (`reference` names it), not in a local file."""
    reference: str


BlobPlace = Union[Path, InRepository]


def _session(ref: references.Reference, options: ClientOptions) -> RegistrySession:
    return RegistrySession(ref.domain, options, CredentialStore(options.docker_config).get(ref.domain))


async def _read_blob(repo: Repository, d: Descriptor, limit: int) -> bytes:
    if d.size > limit:
        raise ClientError(f"blob {d.digest} in {repo.describe()} is {d.size} bytes, more than {limit} allowed")
    resp = await repo.open_blob(d.digest)
    async with resp:
        raw = await resp.read(limit)
    if digests.of_bytes(raw, digests.parse(d.digest).algorithm) != d.digest:
        raise VerificationError(f"blob {d.digest} from {repo.describe()} failed verification", d.digest)
    return raw


async def fetch_async(ref: str, options: ClientOptions, platform: Platform | None = None) -> Fetched:
    """The manifest `ref` names (an index resolved to `platform`) and its config blob."""
    r = references.parse(ref)
    async with _session(r, options) as sess:
        repo = Repository(sess, r.path)
        _, m, _, _ = await resolve_image(repo, r, platform)
        config = await _read_blob(repo, m.config, MAX_CONFIG)
    return Fetched(str(r), m, config)


async def fetch_blobs_async(ref: str, descriptors: list[Descriptor], blobs: BlobStore, options: ClientOptions
                            ) -> list[str]:
    """Download these blobs of `ref`'s repository into `blobs`, verified; returns those downloaded."""
    r = references.parse(ref)
    got: list[str] = []

    async def one(d: Descriptor, pool: ThreadPoolExecutor) -> None:
        if await download_blob(repo, d.digest, d.size, blobs, options, lambda n: None, pool):
            got.append(d.digest)

    async with _session(r, options) as sess:
        repo = Repository(sess, r.path)
        with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="soko-fetch") as pool:
            await run_all((one(d, pool) for d in descriptors), options.jobs)
    return got


async def push_async(ref: str, manifest: Manifest, places: dict[str, BlobPlace], options: ClientOptions,
                     progress: Progress = no_progress) -> PushResult:
    """Upload `manifest` as `ref` with the blobs it references, each from its place:
    a file, or a repository (mounted when it is on the same registry, else streamed)."""
    dest = references.parse(ref)
    result = PushResult(str(dest), manifest.digest, len(manifest.raw))
    others: dict[str, RegistrySession] = {}
    async with _session(dest, options) as sess:
        repo = Repository(sess, dest.path, push=True)
        try:
            jobs = []
            for d in manifest.references():
                place = places.get(d.digest)
                if place is None:
                    raise ClientError(f"{ref}: no source for blob {d.digest}")
                if isinstance(place, Path):
                    jobs.append(push_blob(repo, d, FileSource(place, d.size), [], options, progress, result))
                    continue
                src = references.parse(place.reference)
                if src.domain == dest.domain:
                    other = sess
                else:
                    other = others.get(src.domain)
                    if other is None:
                        other = others[src.domain] = await _session(src, options).__aenter__()
                jobs.append(push_blob(repo, d, RemoteSource(Repository(other, src.path), d.digest, d.size),
                                      [src.path] if other is sess else [], options, progress, result))
            await run_all(jobs, options.jobs)
            await repo.put_manifest(dest.tag or manifest.digest, manifest.raw, manifest.media_type)
        finally:
            for o in others.values():
                await o.__aexit__(None, None, None)
    return result


def fetch(ref: str, options: ClientOptions | None = None, platform: Platform | None = None) -> Fetched:
    return run_sync(fetch_async(ref, options or ClientOptions(), platform))


def fetch_blobs(ref: str, descriptors: list[Descriptor], blobs: BlobStore, options: ClientOptions | None = None
                ) -> list[str]:
    return run_sync(fetch_blobs_async(ref, descriptors, blobs, options or ClientOptions()))


def push(ref: str, manifest: Manifest, places: dict[str, BlobPlace], options: ClientOptions | None = None,
         progress: Progress = no_progress) -> PushResult:
    return run_sync(push_async(ref, manifest, places, options or ClientOptions(), progress))
