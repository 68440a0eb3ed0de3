"""A stored image with its uncompressed layers compressed: made once per layer, then remembered.

`import`, `load` and `commit` keep layers uncompressed; a push sends them compressed (gzip
by default, as `docker push` does). The compressed blob is stored beside the original and
recorded in the `layers` table under the same diff_id, so the next push finds it: nothing
is compressed twice and the digest never changes (registries, caches and signatures see one
blob), the mapping containerd and Docker keep too. gc keeps such a blob for as long as any
form of its layer is live (storage.gc). One process at a time compresses a given layer:
another waits on a lock file under ingest/ and then takes the result.

Only uncompressed layers are converted: a layer stored gzip or zstd goes as it is, as
Docker and podman push it (recompressing would change digests that registries know).
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass

from . import compression as comp, mediatypes as mt
from .errors import ManifestError
from .images import ImageStore
from .model import Descriptor, Index, Manifest, canonical_json, parse_manifest

READ = comp.GZIP_BLOCK  # the gzip writer takes whole blocks without copying


@dataclass(frozen=True)
class Wanted:
    """What a push asks for: `compression` of uncompressed layers, at `level` (None: the default)."""
    compression: str = comp.GZIP
    level: int | None = None

    def __post_init__(self) -> None:
        comp.check(self.compression)
        comp.check_level(self.compression, self.level)


def needs_compressing(d: Descriptor, wanted: Wanted) -> bool:
    return (wanted.compression != comp.NONE and mt.is_layer(d.media_type)
            and mt.layer_compression(d.media_type) == comp.NONE)


def remembered(store: ImageStore, diff_id: str, compression: str) -> tuple[str, int] | None:
    """The first stored blob of layer `diff_id` in `compression` (digest, size), if any."""
    return next(((digest, size) for digest, kind, size in store.layer_blobs(diff_id) if kind == compression), None)


def compressed_layer(store: ImageStore, d: Descriptor, diff_id: str, wanted: Wanted,
                     family: str = "oci", threads: int | None = None) -> Descriptor:
    """The descriptor of uncompressed layer `d` in `wanted.compression`, made and stored
    on the first call for this layer and format, found on every later one."""
    media_type = mt.LAYER_BY_COMPRESSION[family][wanted.compression]
    found = remembered(store, diff_id, wanted.compression)
    if found is None:
        lock = store.blobs.ingest_dir / f"compress-{diff_id.split(':', 1)[-1]}-{wanted.compression}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another push of this layer finishes first
            found = remembered(store, diff_id, wanted.compression) or _compress(store, d, diff_id, wanted,
                                                                                 threads)
        finally:
            os.close(fd)  # releases the lock
    digest, size = found
    return Descriptor(media_type, digest, size, d.annotations, d.platform, d.urls, d.artifact_type)


def _compress(store: ImageStore, d: Descriptor, diff_id: str, wanted: Wanted,
              threads: int | None) -> tuple[str, int]:
    w = store.blobs.writer()
    cw = comp.open_writer(w, wanted.compression, wanted.level, threads)
    try:
        with store.blobs.open(d.digest) as f:
            while chunk := f.read(READ):
                cw.write(chunk)
        cw.close()
        digest = w.commit()
    except BaseException:
        cw.abort()
        raise
    finally:
        w.close()
    size = store.blobs.size(digest)
    store.record_layer(diff_id, digest, wanted.compression, size)
    return digest, size


def manifest_with(m: Manifest, layers: dict[str, Descriptor]) -> Manifest:
    """`m` with the layers whose digest is a key of `layers` replaced by its value: every
    other field is kept, and the result is serialized canonically (the same bytes every
    time, so the same digest)."""
    out = _rewritten(m, "layers", {old: {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
                                   for old, d in layers.items()})
    if not isinstance(out, Manifest):
        raise ManifestError("expected an image manifest")  # not reached: the kind is kept
    return out


def index_with(idx: Index, children: dict[str, Manifest]) -> Index:
    """`idx` pointing at the replaced child manifests (keyed by the old digest)."""
    out = _rewritten(idx, "manifests", {old: {"digest": m.digest, "size": len(m.raw)}
                                        for old, m in children.items()})
    if not isinstance(out, Index):
        raise ManifestError("expected an index")
    return out


def _rewritten(m: Manifest | Index, field: str, changes: dict[str, dict]) -> Manifest | Index:
    """`m` with the descriptors of `field` whose digest is a key of `changes` updated."""
    if not any(d.digest in changes for d in (m.layers if isinstance(m, Manifest) else m.manifests)):
        return m
    obj = json.loads(m.raw)
    for entry in obj[field]:
        entry.update(changes.get(entry["digest"], {}))
    return parse_manifest(canonical_json(obj), m.media_type)


def family_of(m: Manifest) -> str:
    """Which media types `m`'s layers take (storage.mediatypes.LAYER_BY_COMPRESSION)."""
    return "docker" if m.media_type == mt.DOCKER_MANIFEST else "oci"
