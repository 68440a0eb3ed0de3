"""What the registry asks of its metadata: repositories, blob links,
manifests and their references, tags, referrers, upload sessions, quota
figures, garbage collections, and the views of /metrics and the web UI.

Two implementations (registry/server/metadb/): SQLite in the registry root
(the default: one machine needs no server) and PostgreSQL (`--metadata
postgresql://...`: several `soko serve` replicas share it). Nothing outside
metadb/ knows which one it talks to; registry/METADATA.md says how each
keeps the invariants.

Blob bytes are shared by every repository (one blob store); a blob is
readable in a repository only through a link row, made when it was pushed
or mounted there. Every write that makes a blob reachable checks, inside its
transaction, that the blob is still in the store, and garbage collection
deletes blobs only inside transactions that exclude those writes, so a push
never links a blob gc is deleting.

Every method blocks: call it from a worker thread (`Registry.run`), or, for
the point reads of the hot paths, through `Registry.read`, which runs them
on the event loop only where that is cheap (`inline_reads`: SQLite).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

# reg_manifest_refs.kind
REF_BLOB = "blob"  # config or layer: must be a blob linked in the repository
REF_MANIFEST = "manifest"  # index child: must be a manifest in the repository

Visible = Callable[[str], bool] | None  # may the viewer pull this repository? None: everything


@dataclass(frozen=True)
class ManifestRow:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class UploadRow:
    id: str
    repo: str
    started: float
    updated: float


@dataclass
class NewManifest:
    """What a manifest PUT records, prepared off the transaction."""
    repo: str
    digest: str
    media_type: str
    size: int
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None
    refs: list[tuple[str, str]]  # (digest, REF_BLOB | REF_MANIFEST)


@dataclass(frozen=True)
class GCRun:
    finished: float  # Unix time
    seconds: float
    blobs_removed: int
    bytes_freed: int
    manifests_removed: int
    tags_removed: int
    runner: str | None = None  # HOST:PID of the process that ran it (None: before soko recorded it)


@dataclass(frozen=True)
class RegistryStats:
    repositories: int
    tags: int
    manifests: int  # (repository, manifest) pairs
    blobs: int  # unique blobs and manifests linked into some repository
    bytes: int  # their bytes, each counted once
    uploads: int  # upload sessions open (in progress or abandoned, until upload_ttl)
    gc_runs: int  # collections ever run on this registry (online and `soko gc --registry`)
    gc_bytes_freed: int  # by all of them
    last_gc: GCRun | None


@dataclass(frozen=True)
class RepoRow:
    name: str
    tags: int
    size: int  # bytes of the blobs and manifests linked into it
    pushed: float | None  # the newest tag or manifest push


@dataclass(frozen=True)
class TagRow:
    tag: str
    digest: str
    media_type: str
    size: int  # the manifest's own bytes
    pushed: float


@dataclass(frozen=True)
class ManifestNode:
    """A manifest as garbage collection sees it."""
    repo: str
    digest: str
    subject: str | None
    added: float


class Tx(Protocol):
    """Inside one write transaction: what a guard (a quota or immutability check,
    policy.py) may read before anything changes. It raises to refuse."""

    def lock(self, key: str) -> None:
        """Hold `key` until the transaction ends: transactions locking the same key
        run one after the other (SQLite's writers already do)."""

    def in_namespace(self, ns: str, digest: str) -> bool: ...
    def namespace_usage(self, ns: str) -> int: ...
    def tag_digest(self, repo: str, tag: str) -> str | None: ...
    def tags_of(self, repo: str, digest: str) -> list[str]: ...


# A check run inside a write transaction, before anything changes; it raises to refuse.
Guard = Callable[[Tx], None]


class GCTx(Tx, Protocol):
    """Garbage collection's transaction: no write that makes something reachable runs meanwhile."""

    def stale_uploads(self, before: float) -> list[str]: ...
    def delete_uploads(self, ids: Sequence[str]) -> None: ...
    def upload_ids(self) -> set[str]: ...
    def tagged_repositories(self) -> list[str]: ...
    def tags_by_age(self, repo: str) -> list[tuple[str, float]]: ...  # newest first
    def delete_tag(self, repo: str, tag: str) -> None: ...
    def manifest_repositories(self) -> list[str]: ...
    def manifests(self) -> list[ManifestNode]: ...
    def index_children(self) -> list[tuple[str, str]]: ...  # (index digest, child digest)
    def tagged_manifests(self) -> set[tuple[str, str]]: ...  # (repo, digest) some tag names
    def delete_manifest(self, repo: str, digest: str) -> int: ...  # tags removed with it
    def delete_dead_links(self, cutoff: float) -> int: ...
    def drop_orphans(self) -> None: ...  # references of no manifest, repositories with nothing
    def is_linked(self, digest: str) -> bool: ...
    def record_gc(self, run: GCRun) -> None: ...


class RegistryMeta(ABC):
    """The registry's metadata store."""

    inline_reads: bool = False  # point reads are cheap enough for the event loop
    where: str = ""  # for messages: the file or server

    # -- point reads (hot paths) -----------------------------------------------------------------
    @abstractmethod
    def repo_exists(self, repo: str) -> bool: ...
    @abstractmethod
    def linked_size(self, repo: str, digest: str) -> int | None: ...
    @abstractmethod
    def any_link(self, digest: str) -> bool: ...
    @abstractmethod
    def manifest_by_tag(self, repo: str, tag: str) -> ManifestRow | None: ...
    @abstractmethod
    def manifest_by_digest(self, repo: str, digest: str) -> ManifestRow | None: ...
    @abstractmethod
    def upload(self, upload_id: str) -> UploadRow | None: ...

    # -- listings ----------------------------------------------------------------------------------
    @abstractmethod
    def tags(self, repo: str, last: str | None, limit: int | None) -> list[str]:
        """One page of tags in lexical order, after `last` (exclusive), as tags/list wants."""
    @abstractmethod
    def repositories(self, last: str | None, limit: int | None) -> list[str]: ...
    @abstractmethod
    def referrers(self, repo: str, subject: str, artifact_type: str | None) -> list[Referrer]: ...
    @abstractmethod
    def repositories_like(self, needle: str, limit: int | None = None) -> list[str]:
        """Repository names containing `needle` (case-insensitive), in order (search)."""
    @abstractmethod
    def repos_linking(self, digest: str, limit: int = 100) -> list[str]:
        """Repositories where `digest` is linked (a mount without `from` looks among them)."""
    @abstractmethod
    def tags_of(self, repo: str, digest: str) -> list[str]: ...
    @abstractmethod
    def count_uploads(self) -> int: ...
    @abstractmethod
    def upload_ids(self) -> set[str]: ...

    # -- writes --------------------------------------------------------------------------------------
    @abstractmethod
    def link_blob(self, repo: str, digest: str, size: int, still_there: Callable[[], bool],
                  guard: Guard | None = None) -> bool:
        """Link a blob into `repo` if `still_there()` says it is in the store, checked
        inside the transaction (so gc cannot delete it under us)."""
    @abstractmethod
    def unlink_blob(self, repo: str, digest: str) -> bool: ...
    @abstractmethod
    def put_manifest(self, m: NewManifest, tags: list[str], place: Callable[[], Any], guard: Guard | None = None,
                     require_refs: bool = True) -> list[str]:
        """Record a manifest (and its tags) whose references all exist in the
        repository; returns the missing references instead when some do not
        (unless not `require_refs`: a pull-through cache fetches them later).
        `place()` stores the manifest bytes as a blob, inside the transaction."""
    @abstractmethod
    def set_tag(self, repo: str, tag: str, digest: str) -> bool:
        """Point `tag` at a manifest the repository has (False when it has not)."""
    @abstractmethod
    def delete_tag(self, repo: str, tag: str) -> bool: ...
    @abstractmethod
    def delete_manifest(self, repo: str, digest: str, guard: Guard | None = None) -> bool:
        """The manifest, every tag on it and its blob link in `repo`."""
    @abstractmethod
    def new_upload(self, upload_id: str, repo: str) -> None: ...
    @abstractmethod
    def touch_upload(self, upload_id: str) -> None: ...
    @abstractmethod
    def delete_upload(self, upload_id: str) -> None: ...
    @abstractmethod
    def finish_upload(self, upload_id: str | None, repo: str, digest: str, size: int, place: Callable[[], Any],
                      guard: Guard | None = None) -> None:
        """Atomically: move the upload's data into place as a blob, link it into
        `repo` and forget the session."""

    # -- garbage collection --------------------------------------------------------------------------
    @abstractmethod
    def gc_run(self) -> AbstractContextManager[bool]:
        """Whether this process may collect now: True for one collector at a time
        across every process on this metadata (False: another one is collecting)."""
    @abstractmethod
    def gc_transaction(self, commit: bool = True) -> AbstractContextManager[GCTx]:
        """A transaction excluding every write that makes something reachable;
        rolled back at the end unless `commit` (a dry run)."""

    # -- views: /metrics and the web UI -------------------------------------------------------------
    @abstractmethod
    def stats(self) -> RegistryStats: ...
    @abstractmethod
    def repository_page(self, visible: Visible, needle: str, sort: str, descending: bool,
                        page: Callable[[int], tuple[int, int]]) -> tuple[list[RepoRow], int]:
        """Repositories the viewer may see whose name contains `needle`, sorted
        (`name`, `tags`, `size` or `pushed`); `page(total)` says (limit, offset).
        Returns the rows and the total."""
    @abstractmethod
    def repository_figures(self, name: str) -> RepoRow | None: ...
    @abstractmethod
    def tag_page(self, repo: str, needle: str, sort: str, descending: bool,
                 page: Callable[[int], tuple[int, int]]) -> tuple[list[TagRow], int]:
        """A repository's tags (sorted by `name` or `pushed`) with the manifest each names."""
    @abstractmethod
    def recent_uploads(self, limit: int) -> list[UploadRow]:
        """Upload sessions not finished yet, newest activity first."""

    @abstractmethod
    def close(self) -> None: ...


def batched(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
