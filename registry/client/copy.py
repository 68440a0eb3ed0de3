"""copy: between any two of docker://, oci-archive:, docker-archive:, soko:.

Registry to registry streams each blob from one to the other without
touching the local store (and mounts instead when both are one registry);
an index travels with all its children unless `options.all_platforms` is
off. Archives go through a temporary store (or the local one when the
other side is `soko:`), using storage.archives to read and write them.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from storage import references
from storage.errors import StorageError
from storage.images import ImageStore
from storage.model import Index, Manifest, Platform

from . import archives
from .credentials import CredentialStore
from .errors import ClientError, ProtocolError, UsageError
from .options import ClientOptions, CopyResult, Progress, PushResult, no_progress
from .pull import parse_fetched, pull_async
from .push import push_async, push_blob, unique_blobs
from .remote import FetchedManifest, Repository
from .session import RegistrySession
from .tasks import run_all
from .upload import RemoteSource
from .transports import Endpoint, parse_endpoint


async def copy_async(src: str, dst: str, options: ClientOptions | None = None,
                     progress: Progress = no_progress, store: ImageStore | None = None,
                     platform: Platform | None = None) -> CopyResult:
    options = options or ClientOptions()
    s, d = parse_endpoint(src), parse_endpoint(dst)
    if "soko" in (s.kind, d.kind) and store is None:
        raise UsageError("soko: endpoints need the local store")
    if s.kind == "docker" and d.kind == "docker":
        digest = await copy_between_registries(s.ref, d.ref, options, progress, platform)  # type: ignore[arg-type]
        return CopyResult(src, dst, digest)
    if s.kind == "soko" and d.kind == "soko":
        assert store is not None
        digest = _resolve(store, s.ref)  # type: ignore[arg-type]
        _tag(store, d.ref, digest)  # type: ignore[arg-type]
        return CopyResult(src, dst, digest)
    # Everything else meets in a store: the local one when an end is soko:, else a temporary one.
    tmp: Path | None = None
    work = store if "soko" in (s.kind, d.kind) else None
    try:
        if work is None:
            tmp = Path(tempfile.mkdtemp(prefix="soko-copy-"))
            work = ImageStore(tmp)
        digest = await _into_store(s, d, work, options, progress, platform)
        await _out_of_store(d, s, work, digest, options, progress)
        return CopyResult(src, dst, digest)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


async def _into_store(s: Endpoint, d: Endpoint, work: ImageStore, options: ClientOptions,
                      progress: Progress, platform: Platform | None) -> str:
    """Make the source image present in `work`; returns its manifest (or index) digest."""
    if s.kind == "soko":
        return _resolve(work, s.ref)  # type: ignore[arg-type]
    if s.kind == "docker":
        tag_as = d.ref if d.kind == "soko" else None
        result = await pull_async(work, s.ref, platform, options, progress,  # type: ignore[arg-type]
                                  tag_as=tag_as or _scratch_tag(s.ref))  # type: ignore[arg-type]
        return result.digest
    digest = archives.load(s.kind, s.path, work, s.ref)  # type: ignore[arg-type]
    if d.kind == "soko":
        _tag(work, d.ref, digest)  # type: ignore[arg-type]
    return digest


async def _out_of_store(d: Endpoint, s: Endpoint, work: ImageStore, digest: str, options: ClientOptions,
                        progress: Progress) -> None:
    if d.kind == "soko":
        if s.kind == "soko":
            _tag(work, d.ref, digest)  # type: ignore[arg-type]
        return
    if d.kind == "docker":
        await push_async(work, digest, d.ref, options, progress)
        return
    ref = d.ref or s.ref
    archives.save(d.kind, d.path, work, digest, ref)  # type: ignore[arg-type]


def _scratch_tag(ref: str) -> str:
    r = references.parse(ref)
    return str(r.with_tag(r.tag or "latest"))


def _resolve(store: ImageStore, ref: str) -> str:
    try:
        return store.resolve_digest(ref)
    except StorageError as e:
        raise ClientError(str(e)) from None


def _tag(store: ImageStore, ref: str, digest: str) -> None:
    try:
        store.tag(ref, digest)
    except StorageError as e:
        raise ClientError(str(e)) from None


# -- registry to registry -------------------------------------------------------------
async def copy_between_registries(src: str, dst: str, options: ClientOptions, progress: Progress,
                                  platform: Platform | None = None) -> str:
    s, d = references.parse(src), references.parse(dst)
    creds = CredentialStore(options.docker_config)
    async with RegistrySession(s.domain, options, creds.get(s.domain)) as ss:
        if d.domain == s.domain:
            return await _copy(Repository(ss, s.path), Repository(ss, d.path, push=True), s, d, options,
                               progress, platform)
        async with RegistrySession(d.domain, options, creds.get(d.domain)) as ds:
            return await _copy(Repository(ss, s.path), Repository(ds, d.path, push=True), s, d, options,
                               progress, platform)


async def _copy(srepo: Repository, drepo: Repository, s: references.Reference, d: references.Reference,
                options: ClientOptions, progress: Progress, platform: Platform | None) -> str:
    want = s.digest or s.tag or "latest"
    top = await srepo.get_manifest(want)
    top_m = parse_fetched(top, f"manifest {srepo.describe(want)}")
    children: list[tuple[FetchedManifest, Manifest]] = []
    if isinstance(top_m, Index):
        if options.all_platforms and platform is None:
            wanted = top_m.manifests
        else:
            try:
                wanted = [top_m.select(platform or Platform.host())]
            except StorageError as e:
                raise ClientError(f"{srepo.describe(want)}: {e}") from None
        for desc in wanted:
            f = await srepo.get_manifest(desc.digest)
            cm = parse_fetched(f, f"manifest {srepo.describe(desc.digest)}")
            if isinstance(cm, Index):
                raise ProtocolError(f"{srepo.describe(want)}: nested index {desc.digest} is not supported")
            children.append((f, cm))
        if len(wanted) == 1 and not (options.all_platforms and platform is None):
            top, top_m = children[0]   # one platform chosen: the copy is that image alone
            children = []
    images = [m for _, m in children] if children else [top_m]  # type: ignore[list-item]
    same_registry = srepo.session is drepo.session
    result = PushResult(str(d), top.digest, len(top.raw))
    layers = {x.digest for m in images for x in m.layers}

    await run_all((push_blob(drepo, b, RemoteSource(srepo, b.digest, b.size),
                             [s.path] if same_registry else [], options, progress, result,
                             quiet=b.digest not in layers)
                   for b in unique_blobs(images)), options.jobs)  # type: ignore[arg-type]
    for f, m in children:
        await drepo.put_manifest(m.digest, f.raw, m.media_type)
    await drepo.put_manifest(d.tag or top.digest, top.raw, top_m.media_type)
    return top.digest
