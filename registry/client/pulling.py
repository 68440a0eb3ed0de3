"""Pull: a reference on a registry -> an image in the local store.

Tag -> manifest (an index resolves to the requested platform, by default
this machine's); config and layers download side by side, verified while
they stream into the blob store, resumed with Range after a drop; blobs
already stored are skipped. The layers' source repository is recorded so a
later push to the same registry can mount instead of upload.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from storage import mediatypes as mt, references
from storage.errors import StorageError
from storage.images import ImageStore
from storage.model import Descriptor, Index, Manifest, Platform, parse_manifest

from .credentials import CredentialStore
from .errors import ClientError, ProtocolError
from .options import ClientOptions, Progress, ProgressEvent, PullResult, no_progress, short_id
from .remote import FetchedManifest, Repository
from .session import RegistrySession
from .tasks import run_all
from .download import download_blob


def parse_fetched(f: FetchedManifest, what: str) -> Manifest | Index:
    """Parse what a registry sent, trusting its Content-Type only when it names a manifest type."""
    media_type = f.media_type if f.media_type in mt.ALL_MANIFESTS else None
    try:
        return parse_manifest(f.raw, media_type, digest=f.digest)
    except StorageError as e:
        raise ProtocolError(f"{what}: {e}") from None


async def resolve_image(repo: Repository, ref: references.Reference, platform: Platform | None
                        ) -> tuple[FetchedManifest, Manifest, FetchedManifest | None, Index | None]:
    """The image manifest `ref` names for `platform` (and the index it came from)."""
    want = ref.digest or ref.tag or "latest"
    top = await repo.get_manifest(want)
    m = parse_fetched(top, f"manifest {repo.describe(want)}")
    if isinstance(m, Manifest):
        return top, m, None, None
    try:
        child = m.select(platform or Platform.host())
    except StorageError as e:
        raise ClientError(f"{repo.describe(want)}: {e}") from None
    fetched = await repo.get_manifest(child.digest)
    cm = parse_fetched(fetched, f"manifest {repo.describe(child.digest)}")
    if isinstance(cm, Index):
        raise ProtocolError(f"{repo.describe(want)}: nested index {child.digest} is not supported")
    return fetched, cm, top, m


async def pull_async(store: ImageStore, ref: str, platform: Platform | None = None,
                     options: ClientOptions | None = None, progress: Progress = no_progress,
                     tag_as: str | None = None) -> PullResult:
    options = options or ClientOptions()
    r = references.parse(ref)
    creds = CredentialStore(options.docker_config).get(r.domain)
    async with RegistrySession(r.domain, options, creds) as sess:
        repo = Repository(sess, r.path)
        fetched, m, top, index = await resolve_image(repo, r, platform)
        result = PullResult(str(r), m.digest, index.digest if index else None, m.config.digest)
        await fetch_blobs(repo, store, m, options, progress, result)
    for d in m.references():
        store.record_source(d.digest, r.domain, r.path)
    try:
        store.add_manifest(fetched.raw, m.media_type)
        if top is not None and index is not None:
            store.add_index(top.raw, index.media_type)
        if tag_as is not None:
            store.tag(tag_as, m.digest)
        elif r.tag and not r.digest:
            store.tag(r, m.digest)
    except StorageError as e:
        raise ClientError(f"{r.familiar()}: {e}") from None
    return result


async def fetch_blobs(repo: Repository, store: ImageStore, m: Manifest, options: ClientOptions,
                      progress: Progress, result: PullResult) -> None:
    layers = {d.digest for d in m.layers}
    todo: list[Descriptor] = []
    seen: set[str] = set()
    for d in [m.config, *m.layers]:
        if d.digest in seen:
            continue
        seen.add(d.digest)
        if store.blobs.has(d.digest):
            result.present.append(d.digest)
            if d.digest in layers:
                progress(ProgressEvent(short_id(d.digest), "Already exists", d.size, d.size, d.digest))
            continue
        todo.append(d)
        if d.digest in layers:
            progress(ProgressEvent(short_id(d.digest), "Waiting", 0, d.size, d.digest))

    async def one(d: Descriptor, pool: ThreadPoolExecutor) -> None:
        quiet = d.digest not in layers   # Docker shows layers, not the config

        def report(done: int) -> None:
            if not quiet:
                progress(ProgressEvent(short_id(d.digest), "Downloading", done, d.size, d.digest))

        fetched = await download_blob(repo, d.digest, d.size, store.blobs, options, report, pool)
        if fetched:
            result.downloaded.append(d.digest)
        else:
            result.present.append(d.digest)
        if not quiet:
            progress(ProgressEvent(short_id(d.digest), "Pull complete", d.size, d.size, d.digest))

    # the config first: it is small and tells early whether the image is usable
    todo.sort(key=lambda d: d.digest in layers)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="soko-pull") as pool:
        await run_all((one(d, pool) for d in todo), options.jobs)
