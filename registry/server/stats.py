"""What the registry holds and what its garbage collections freed, read from
the metadata database: one snapshot for /metrics and the web UI. Reads scan
the link table: call it off the event loop (`Registry.run`)."""
from __future__ import annotations

from dataclasses import dataclass

from .meta import RegistryDB


@dataclass(frozen=True)
class GCRun:
    finished: float  # Unix time
    seconds: float
    blobs_removed: int
    bytes_freed: int
    manifests_removed: int
    tags_removed: int


@dataclass(frozen=True)
class RegistryStats:
    repositories: int
    tags: int
    manifests: int  # (repository, manifest) pairs
    blobs: int  # unique blobs and manifests linked into some repository
    bytes: int  # their bytes, each counted once
    uploads: int  # upload sessions open (in progress or abandoned, until upload_ttl)
    gc_runs: int  # collections ever run on this root (online and `soko gc --registry`)
    gc_bytes_freed: int  # by all of them
    last_gc: GCRun | None


def registry_stats(meta: RegistryDB) -> RegistryStats:
    c = meta.db.conn
    one = lambda sql: c.execute(sql).fetchone()  # noqa: E731
    blobs, size = one("SELECT count(*), COALESCE(SUM(size), 0) FROM "
                      "(SELECT MAX(size) AS size FROM reg_blob_links GROUP BY digest)")
    runs, freed = one("SELECT count(*), COALESCE(SUM(bytes_freed), 0) FROM reg_gc_runs")
    last = one("SELECT finished, seconds, blobs_removed, bytes_freed, manifests_removed, tags_removed "
               "FROM reg_gc_runs ORDER BY id DESC LIMIT 1")
    return RegistryStats(
        repositories=one("SELECT count(*) FROM reg_repositories")[0], tags=one("SELECT count(*) FROM reg_tags")[0],
        manifests=one("SELECT count(*) FROM reg_manifests")[0], blobs=blobs, bytes=size,
        uploads=one("SELECT count(*) FROM reg_uploads")[0], gc_runs=runs, gc_bytes_freed=freed,
        last_gc=GCRun(*last) if last is not None else None)
