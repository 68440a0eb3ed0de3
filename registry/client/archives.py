"""The archive ends of copy, through storage.archives (OCI layout tar, docker-archive)."""
from __future__ import annotations

from pathlib import Path

from storage.errors import StorageError
from storage.images import ImageStore

from .errors import ClientError, UsageError


def _module():
    try:
        from storage import archives  # written on another branch; present once merged
    except ImportError:
        raise UsageError("archive transports are not available in this build (storage.archives missing)") from None
    return archives


def load(kind: str, path: Path, store: ImageStore, ref: str | None) -> str:
    """Read an archive into `store`; returns the manifest (or index) digest of `ref`
    (or of the archive's only image)."""
    mod = _module()
    try:
        return mod.load_for_copy(kind, path, store, ref)
    except StorageError as e:
        raise ClientError(f"{kind}:{path}: {e}") from None
    except FileNotFoundError:
        raise ClientError(f"{kind}:{path}: no such file") from None


def save(kind: str, path: Path, store: ImageStore, digest: str, ref: str | None) -> None:
    mod = _module()
    try:
        mod.save_for_copy(kind, path, store, digest, ref)
    except StorageError as e:
        raise ClientError(f"{kind}:{path}: {e}") from None
