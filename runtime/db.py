"""The runtime's tables in the store's metadata database (component "runtime").

snapshots: one row per unpacked layer stack (see snapshots.py).
containers: the record of each container a user made (`run`, `create`): its
ID, unique name, image, layers (kept alive against gc) and its configuration
as Docker's API shows it. What changes while a container lives (status, pid,
exit code, health) is in its directory, written by whoever owns it (see
containers.py). Build steps are containers without a record.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.metadata import MetadataDB

MIGRATIONS = [
    """
    CREATE TABLE snapshots (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT,
        created REAL NOT NULL
    );
    """,
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        image_ref TEXT NOT NULL,
        created REAL NOT NULL,
        layers TEXT NOT NULL,
        config TEXT NOT NULL
    );
    """,
]


def migrated(db: "MetadataDB") -> "MetadataDB":
    db.migrate("runtime", MIGRATIONS)
    return db
