"""copy: between any two of docker://, oci-archive:, docker-archive:, soko:.

Registry to registry streams each blob from one to the other without
touching the local store (and mounts instead when both are one registry);
an index travels with all its children unless `options.all_platforms` is
off. soko: <-> docker:// is push or pull. Archives are read and written by
storage.archives through a temporary store, so loading an archive never
adds its other images or tags to the local store.
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
from .local import transfer
from .options import ClientOptions, CopyResult, Progress, PushResult, no_progress
from .pulling import parse_fetched, pull_async
from .pushing import push_async, push_blob, unique_blobs
from .remote import FetchedManifest, Repository
from .session import RegistrySession
from .tasks import run_all
from .transports import Endpoint, parse_endpoint
from .upload import RemoteSource


async def copy_async(src: str, dst: str, options: ClientOptions | None = None,
                     progress: Progress = no_progress, store: ImageStore | None = None,
                     platform: Platform | None = None) -> CopyResult:
    options = options or ClientOptions()
    s, d = parse_endpoint(src), parse_endpoint(dst)
    if "soko" in (s.kind, d.kind) and store is None:
        raise UsageError("soko: endpoints need the local store")
    if s.kind == "docker" and d.kind == "docker":
        digest = await copy_between_registries(s.ref, d.ref, options, progress, platform)  # type: ignore[arg-type]
    elif s.kind == "soko" and d.kind == "soko":
        digest = _resolve(store, s.ref)  # type: ignore[arg-type]
        _tag(store, d.ref, digest)  # type: ignore[arg-type]
    elif s.kind == "soko" and d.kind == "docker":
        digest = (await push_async(store, s.ref, d.ref, options, progress)).digest  # type: ignore[arg-type]
    elif s.kind == "docker" and d.kind == "soko":
        digest = (await pull_async(store, s.ref, platform, options, progress,  # type: ignore[arg-type]
                                   tag_as=d.ref)).digest
    elif s.kind == "soko" and (d.ref is None or _same(d.ref, s.ref)):  # type: ignore[arg-type]
        digest = _resolve(store, s.ref)  # type: ignore[arg-type]
        archives.save(d.kind, d.path, store, s.ref)  # type: ignore[arg-type]
    else:
        digest = await _through_scratch(s, d, options, progress, store, platform)
    return CopyResult(src, dst, digest)


async def _through_scratch(s: Endpoint, d: Endpoint, options: ClientOptions, progress: Progress,
                           store: ImageStore | None, platform: Platform | None) -> str:
    """An archive on one side at least: the image passes through a temporary
    store (under the local store's ingest/ when there is one, so blobs link)."""
    parent = store.blobs.ingest_dir if store is not None else None
    tmp = Path(tempfile.mkdtemp(prefix="copy-", dir=parent))
    try:
        work = ImageStore(tmp)
        name = d.ref or s.ref   # the name the image carries into an archive
        if s.kind == "soko":
            assert store is not None
            digest = transfer(store, work, _resolve(store, s.ref), _full(name))  # type: ignore[arg-type]
        elif s.kind == "docker":
            digest = (await pull_async(work, s.ref, platform, options, progress,  # type: ignore[arg-type]
                                       tag_as=_full(name))).digest  # type: ignore[arg-type]
        else:
            digest = archives.load(s.kind, s.path, work, s.ref)  # type: ignore[arg-type]
            if name:
                _tag(work, _full(name), digest)
        if d.kind == "docker":
            await push_async(work, digest, d.ref, options, progress)
        elif d.kind == "soko":
            assert store is not None
            transfer(work, store, digest, d.ref)
        else:
            archives.save(d.kind, d.path, work, _full(name) if name else digest)  # type: ignore[arg-type]
        return digest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _full(ref: str | None) -> str | None:
    if ref is None:
        return None
    r = references.parse(ref)
    return str(r.with_tag(r.tag or "latest")) if not r.digest or r.tag else str(r)


def _same(a: str, b: str) -> bool:
    return references.parse(a) == references.parse(b)


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
