"""Push: an image (or index) of the local store -> a registry.

Uncompressed layers (from import, load, commit) go compressed, gzip unless
`options.compression` says otherwise, as `docker push` sends them; the
compressed blob is made once and remembered (storage.layer_variants), so a
later push sends the same digest without compressing again. Compressing a
layer overlaps the upload of the others.

Each blob is HEADed first and skipped when the repository has it; when the
store knows another repository on the same registry that holds it (from a
pull or an earlier push), it is mounted from there instead of uploaded. The
rest upload side by side (`options.jobs`). Manifests go last, children of
an index before the index, with their exact stored bytes and media types
(or, where layers were compressed, the same manifest pointing at them,
which is then recorded in the store as another manifest of the image).
"""
from __future__ import annotations

import asyncio
from dataclasses import replace

from storage import layer_variants as lv, mediatypes as mt, references
from storage.errors import StorageError
from storage.images import ImageStore
from storage.model import Descriptor, ImageConfig, Index, Manifest

from .credentials import CredentialStore
from .errors import ClientError
from .options import ClientOptions, Progress, ProgressEvent, PushResult, no_progress, short_id
from .remote import Repository
from .session import RegistrySession
from .tasks import run_all
from .upload import BlobSource, FileSource, upload_blob

MAX_MOUNT_TRIES = 3


def local_manifests(store: ImageStore, digest: str) -> tuple[Manifest | Index, list[Manifest]]:
    """The top manifest and the image manifests under it, all from the store."""
    try:
        top = store.manifest(digest)
    except StorageError as e:
        raise ClientError(str(e)) from None
    if isinstance(top, Manifest):
        return top, [top]
    children: list[Manifest] = []
    for d in top.manifests:
        if not store.blobs.has(d.digest):
            raise ClientError(f"index {digest} refers to {d.digest} ({d.platform or 'no platform'}), which is "
                              f"not in the local store; pull it with --platform first")
        child = store.manifest(d.digest)
        if isinstance(child, Index):
            raise ClientError(f"index {digest}: nested index {d.digest} is not supported")
        children.append(child)
    return top, children


NON_DISTRIBUTABLE = (mt.DOCKER_LAYER_FOREIGN, mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_GZIP,
                     "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")


def unique_blobs(manifests: list[Manifest]) -> list[Descriptor]:
    """Config and layers to transfer, once each; foreign (non-distributable)
    layers stay where their URLs say, as Docker leaves them."""
    out: dict[str, Descriptor] = {}
    for m in manifests:
        for d in m.references():
            if d.media_type in NON_DISTRIBUTABLE:
                continue
            out.setdefault(d.digest, d)
    return list(out.values())


async def push_blob(repo: Repository, d: Descriptor, source: BlobSource, mount_from: list[str],
                    options: ClientOptions, progress: Progress, result: PushResult, quiet: bool = False,
                    sid: str | None = None) -> None:
    """One blob: skip if present, else mount from a sibling repository, else upload.
    `sid`: the id its progress rows go under (default: its own short digest)."""
    sid = sid or short_id(d.digest)

    def say(action: str, done: int = 0) -> None:
        if not quiet:
            progress(ProgressEvent(sid, action, done, d.size, d.digest))

    if await repo.blob_size(d.digest) is not None:
        result.skipped.append(d.digest)
        say("Layer already exists", d.size)
        return
    location: str | None = None
    for src in [s for s in mount_from if s != repo.path][:MAX_MOUNT_TRIES]:
        if location is not None:
            await repo.cancel_upload(location)
        try:
            location, mounted = await repo.start_upload(mount=d.digest, source=src)
        except ClientError:
            location, mounted = None, False   # e.g. no pull access to the source: just upload
        if mounted:
            result.mounted.append(d.digest)
            say(f"Mounted from {src}", d.size)
            return
    say("Pushing", 0)
    await upload_blob(repo, d.digest, d.size, source, options, lambda n: say("Pushing", n), location)
    result.pushed.append(d.digest)
    say("Pushed", d.size)


def layers_to_compress(store: ImageStore, images: list[Manifest], wanted: lv.Wanted) -> dict[str, tuple[str, str]]:
    """Uncompressed layer digest -> (its diff_id, the media type family of its first manifest)."""
    out: dict[str, tuple[str, str]] = {}
    for m in images:
        layers = [d for d in m.layers if mt.is_layer(d.media_type)]
        if not any(lv.needs_compressing(d, wanted) for d in layers):
            continue
        try:
            diff_ids = ImageConfig.parse(store.blobs.read_bytes(m.config.digest)).diff_ids
        except StorageError as e:
            raise ClientError(str(e)) from None
        for diff_id, d in zip(diff_ids, layers):
            if lv.needs_compressing(d, wanted):
                out.setdefault(d.digest, (diff_id, lv.family_of(m)))
    return out


def compressed_images(top: Manifest | Index, images: list[Manifest], done: dict[str, Descriptor]
                      ) -> tuple[Manifest | Index, list[Manifest]]:
    """`top` and `images` pointing at the compressed layers `done` (old digest -> new descriptor)."""
    new_images = []
    for m in images:
        family = lv.family_of(m)
        new_images.append(lv.manifest_with(m, {
            old: replace(d, media_type=mt.LAYER_BY_COMPRESSION[family][mt.layer_compression(d.media_type) or "gzip"])
            for old, d in done.items()}))
    if isinstance(top, Index):
        return lv.index_with(top, {m.digest: n for m, n in zip(images, new_images) if n is not m}), new_images
    return new_images[0], new_images


async def push_async(store: ImageStore, src_ref: str, dest_ref: str | None = None,
                     options: ClientOptions | None = None, progress: Progress = no_progress) -> PushResult:
    options = options or ClientOptions()
    try:
        wanted = lv.Wanted(options.compression, options.compression_level)
        digest = store.resolve_digest(src_ref)
    except StorageError as e:
        raise ClientError(str(e)) from None
    dest = references.parse(dest_ref or src_ref)
    if dest.digest and dest.digest != digest:
        raise ClientError(f"cannot push {src_ref} ({digest}) as {dest.familiar()}: the digests differ")
    top, images = local_manifests(store, digest)
    blobs = unique_blobs(images)
    for d in blobs:
        if not store.blobs.has(d.digest):
            raise ClientError(f"{src_ref}: blob {d.digest} is missing from the local store")
    layer_digests = {d.digest for m in images for d in m.layers}
    to_compress = layers_to_compress(store, images, wanted)
    done: dict[str, Descriptor] = {}
    creds = CredentialStore(options.docker_config).get(dest.domain)

    async def one(d: Descriptor) -> None:
        sid, quiet = short_id(d.digest), d.digest not in layer_digests
        if d.digest in to_compress:
            diff_id, family = to_compress[d.digest]
            progress(ProgressEvent(sid, "Preparing", 0, d.size, d.digest))
            try:
                new = await asyncio.to_thread(lv.compressed_layer, store, d, diff_id, wanted, family)
            except StorageError as e:
                raise ClientError(f"layer {diff_id}: {e}") from None
            done[d.digest] = new
            d = new
        await push_blob(repo, d, FileSource(store.blobs.local_path(d.digest), d.size), store.sources(d.digest, dest.domain),
                        options, progress, result, quiet=quiet, sid=sid)

    result = PushResult(str(dest), top.digest, len(top.raw))
    async with RegistrySession(dest.domain, options, creds) as sess:
        repo = Repository(sess, dest.path, push=True)
        for d in blobs:
            if d.digest in layer_digests:
                progress(ProgressEvent(short_id(d.digest), "Waiting", 0, d.size, d.digest))
        await run_all((one(d) for d in blobs), options.jobs)
        if done:
            top, images = compressed_images(top, images, done)
            result.digest, result.size = top.digest, len(top.raw)
        if isinstance(top, Index):
            for m in images:
                await repo.put_manifest(m.digest, m.raw, m.media_type)
        await repo.put_manifest(dest.tag or top.digest, top.raw, top.media_type)
    if done:
        remember(store, top, images)
    for d in unique_blobs(images):
        store.record_source(d.digest, dest.domain, dest.path)
    return result


def remember(store: ImageStore, top: Manifest | Index, images: list[Manifest]) -> None:
    """The pushed form is another manifest of the same image: `soko pull` of what was
    pushed finds everything here, and the push's repo digest names a local image."""
    try:
        for m in images:
            store.add_manifest(m.raw, m.media_type)
        if isinstance(top, Index):
            store.add_index(top.raw, top.media_type)
    except StorageError as e:
        raise ClientError(str(e)) from None
