"""Facts about local images in Docker's terms: what `docker images`, `inspect` and `history` show.

- Layer size as Docker counts it: the bytes of the files a layer holds once unpacked (regular
  files, symlink targets; a hard link once; directories and whiteouts nothing), which is what
  Docker's overlay2 driver measures. Computed once per diff_id from the stored blob and kept.
- Repo digests (`name@sha256:...`): only the digests an image was pushed or pulled with, as
  Docker records them; they go when the image goes.
- The tags of an image ID: Docker keys images by ID, so two manifests of one config (the same
  image loaded from a docker-archive and from an OCI layout) are one image with all their tags.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import references
from .errors import StorageError

if TYPE_CHECKING:
    from .images import Image, ImageStore

MIGRATIONS = [
    """
    CREATE TABLE layer_usage (
        diff_id TEXT PRIMARY KEY,
        size INTEGER NOT NULL
    );
    CREATE TABLE image_repo_digests (
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        image_id TEXT NOT NULL,
        added REAL NOT NULL,
        PRIMARY KEY (name, digest, image_id)
    );
    CREATE INDEX image_repo_digests_image ON image_repo_digests(image_id);
    """,
]


def _db(store: "ImageStore"):
    store.db.migrate("image_facts", MIGRATIONS)
    return store.db


def unpacked_size(stream) -> int:
    """Docker's size of a layer tar (uncompressed stream): file bytes, symlink targets, hard links once."""
    import tarfile

    total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isreg():
                total += member.size
            elif member.issym():
                total += len(member.linkname.encode())
    return total


def layer_size(store: "ImageStore", diff_id: str, blob_digest: str | None = None) -> int:
    """The unpacked size of layer `diff_id` (from `blob_digest` or any stored blob of it), cached."""
    db = _db(store)
    row = db.one("SELECT size FROM layer_usage WHERE diff_id=?", (diff_id,))
    if row is not None:
        return row[0]
    candidates = [blob_digest] if blob_digest and store.blobs.has(blob_digest) else []
    candidates += [d for d, _, _ in store.layer_blobs(diff_id)]
    if not candidates:
        raise StorageError(f"layer {diff_id} is not in the store")
    import tarfile  # here, with the compressors: a pull or push records facts, never sizes

    from .compression import open_reader

    with store.blobs.open(candidates[0]) as raw:
        try:
            size = unpacked_size(open_reader(raw))
        except tarfile.TarError as e:
            raise StorageError(f"layer {diff_id}: {e}") from None
    db.execute("INSERT OR REPLACE INTO layer_usage(diff_id, size) VALUES(?,?)", (diff_id, size))
    return size


def layer_sizes(store: "ImageStore", image: "Image") -> list[int]:
    """Docker's size of each layer of `image`, bottom first."""
    from . import mediatypes as mt

    blobs = [d.digest for d in image.manifest.layers if mt.is_layer(d.media_type)]
    return [layer_size(store, diff_id, blob) for diff_id, blob in zip(image.config.diff_ids, blobs)]


def image_size(store: "ImageStore", image: "Image") -> int:
    """`docker images` SIZE and inspect's Size: the unpacked bytes of all its layers."""
    return sum(layer_sizes(store, image))


# -- repo digests ---------------------------------------------------------------------------------
def record_repo_digest(store: "ImageStore", reference: str, digest: str, image_id: str) -> None:
    """Remember `name@digest` for the image (after a push or a pull by that digest)."""
    name = references.parse(reference).name
    _db(store).execute("INSERT OR IGNORE INTO image_repo_digests(name, digest, image_id, added) VALUES(?,?,?,?)",
                       (name, digest, image_id, time.time()))


def repo_digests(store: "ImageStore", image_id: str) -> list[str]:
    """Familiar `name@sha256:...` references of an image ID, sorted as Docker lists them."""
    rows = _db(store).query("SELECT name, digest FROM image_repo_digests WHERE image_id=?", (image_id,))
    return sorted(references.parse(f"{n}@{d}").familiar() for n, d in rows)


def forget_repo_digests(store: "ImageStore", image_id: str) -> list[str]:
    """Drop the image's repo digests; returns them (rmi prints each as `Untagged:`)."""
    gone = repo_digests(store, image_id)
    _db(store).execute("DELETE FROM image_repo_digests WHERE image_id=?", (image_id,))
    return gone


# -- tags and ids ---------------------------------------------------------------------------------
def manifests_of(store: "ImageStore", image_id: str) -> list[str]:
    """Every recorded manifest (or index, whose ID is its digest) with this image ID."""
    rows = store.db.query("SELECT manifest_digest FROM images WHERE config_digest=? "
                          "UNION SELECT index_digest FROM indexes WHERE index_digest=?", (image_id, image_id))
    return [r[0] for r in rows]


def image_tags(store: "ImageStore", image_id: str) -> list[str]:
    """All familiar tags of an image ID (any of its manifests)."""
    tags: set[str] = set()
    for m in manifests_of(store, image_id):
        tags.update(store.tags_of(m))
    return sorted(tags)


def image_id_of(store: "ImageStore", digest: str) -> str:
    """The image ID a manifest or index digest stands for (an index is its own ID)."""
    row = store.db.one("SELECT config_digest FROM images WHERE manifest_digest=?", (digest,))
    return row[0] if row else digest


def last_tag_time(store: "ImageStore", image_id: str) -> float | None:
    """When one of the image's tags was last set (inspect's Metadata.LastTagTime)."""
    digests = manifests_of(store, image_id)
    if not digests:
        return None
    marks = ",".join("?" * len(digests))
    row = store.db.one(f"SELECT MAX(updated) FROM tags WHERE manifest_digest IN ({marks})", digests)
    return row[0] if row else None
