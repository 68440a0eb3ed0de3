"""One exception hierarchy for storage; `soko/` turns these into one-line messages."""


class StorageError(Exception):
    """Base of everything storage raises on purpose."""


class DigestError(StorageError):
    """A digest string does not follow the OCI digest grammar, or uses an unsupported algorithm."""


class DigestMismatch(StorageError):
    """Content did not hash to the digest (or size) it was announced with."""

    def __init__(self, expected: str, actual: str, what: str = "content"):
        super().__init__(f"{what} digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SizeMismatch(StorageError):
    """Content was longer or shorter than its descriptor said."""


class BlobNotFound(StorageError):
    def __init__(self, digest: str):
        super().__init__(f"blob not found: {digest}")
        self.digest = digest


class ManifestError(StorageError):
    """A manifest, index or config is malformed or refers to something wrong."""


class LayerError(StorageError):
    """A layer tarball is corrupt, truncated or uses an unknown compression."""


class UnsafePathError(LayerError):
    """A layer entry would write outside the target directory."""


class PathError(StorageError):
    """A path cannot be resolved inside its root (see pathwalk.py)."""


class SymlinkLoop(PathError):
    """More than 40 symlinks met in one lookup (ELOOP, as Linux)."""


class PathEscape(PathError):
    """`..` would climb above the root where the walk's policy refuses that."""

    def __init__(self, path: str, target: str | None):
        via = f" through a symlink to {target!r}" if target is not None else ""
        super().__init__(f"{path!r} leads outside the root{via}")
        self.path = path
        self.target = target


class InvalidReference(StorageError):
    """An image reference does not follow Docker's grammar."""


class ImageNotFound(StorageError):
    def __init__(self, ref: str):
        super().__init__(f"no such image: {ref}")
        self.ref = ref


class ArchiveError(StorageError):
    """An image archive (docker-archive, OCI layout) is malformed or incomplete."""


class MetadataError(StorageError):
    """The metadata database is unusable (newer schema, corrupt file)."""
