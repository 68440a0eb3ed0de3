"""The runtime's tables in the store's metadata database (component "runtime").

snapshots: one row per unpacked layer stack (see snapshots.py).
containers: the record of each container a user made (`run`, `create`): its
ID, unique name, image and its configuration as Docker's API shows it (its
`layers` column was never filled: always "[]").
container_layers: which snapshots (chain IDs) each recorded container has as
its layers, written and deleted with its record: the question "does a
container use this snapshot?" (Snapshots.take) is one lookup, not a read of
every container's state. What changes while a container lives (status, pid,
exit code, health) is in its directory, written by whoever owns it (see
containers.py). Build steps are containers without a record.
"""
from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.metadata import MetadataDB


def _container_layers(c: sqlite3.Connection) -> None:
    """The index, filled for the containers made before it from their state files."""
    from .containers import states

    c.execute("CREATE TABLE container_layers (chain_id TEXT NOT NULL, container TEXT NOT NULL, "
              "PRIMARY KEY (chain_id, container)) WITHOUT ROWID")
    c.execute("CREATE INDEX container_layers_by_container ON container_layers(container)")
    recorded = {row[0] for row in c.execute("SELECT id FROM containers")}
    if not recorded:
        return
    path = next(row[2] for row in c.execute("PRAGMA database_list") if row[1] == "main")
    for d, st in states(os.path.dirname(path)):
        if st is not None and d.name in recorded:
            c.executemany("INSERT OR IGNORE INTO container_layers(chain_id, container) VALUES(?,?)",
                          [(chain, d.name) for chain in st.layers or ()])

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
    _container_layers,
]


def migrated(db: "MetadataDB") -> "MetadataDB":
    db.migrate("runtime", MIGRATIONS)
    return db
