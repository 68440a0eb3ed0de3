"""The archive ends of copy, through storage.archives (OCI layout tar, docker-archive)."""
from __future__ import annotations

from pathlib import Path

from storage import references
from storage.archives import load as load_archive, save as save_archive
from storage.errors import InvalidReference, StorageError
from storage.images import ImageStore

from .errors import ClientError, UsageError

FORMATS = {"oci-archive": "oci", "docker-archive": "docker"}


def load(kind: str, path: Path, store: ImageStore, ref: str | None) -> str:
    """Read the archive into `store` (a scratch store: every image of the archive
    lands there); returns the manifest (or index) digest of the image `ref`
    names, or of the archive's only image."""
    if not path.is_file():
        raise ClientError(f"{kind}:{path}: no such file")
    try:
        loaded = load_archive(store, path)
    except StorageError as e:
        raise ClientError(f"{kind}:{path}: {e}") from None
    if ref:
        try:
            want = references.parse(ref).familiar()
        except InvalidReference as e:
            raise UsageError(str(e)) from None
        named = [item for item in loaded if want in item.tags]
        if named:
            return named[0].digest
    distinct = {item.digest for item in loaded}
    if len(distinct) == 1:
        return loaded[0].digest
    names = ", ".join(t for item in loaded for t in item.tags) or "untagged images"
    if ref:
        raise ClientError(f"{kind}:{path}: no image named {ref} (the archive holds {names})")
    raise ClientError(f"{kind}:{path} holds {len(distinct)} images ({names}); name one as {kind}:{path}:NAME")


def save(kind: str, path: Path, store: ImageStore, ref: str) -> None:
    """Write the image `ref` (a reference or digest in `store`) as an archive at `path`."""
    try:
        save_archive(store, [ref], path, FORMATS[kind])
    except StorageError as e:
        raise ClientError(f"{kind}:{path}: {e}") from None
    except OSError as e:
        raise ClientError(f"{kind}:{path}: {e.strerror or e}") from None
