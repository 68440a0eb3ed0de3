"""Container records in the store's database: IDs, unique names, lookup as Docker does it.

A record is what `ps`, `inspect` and name lookups need and what does not
change while the container lives: its ID, name, image, creation time and
configuration (Docker's Config and HostConfig, as `inspect` shows them).
A name is unique in the store: the database's UNIQUE constraint settles two
`run --name` racing for it.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .db import migrated
from .errors import NameConflict, NoSuchContainer

if TYPE_CHECKING:
    from storage.metadata import MetadataDB

# Generated names: adjective_noun, as Docker names containers nobody named.
_ADJECTIVES = ("able", "amber", "bold", "brisk", "calm", "clever", "cosy", "crisp", "daring", "deft", "eager",
               "early", "fair", "fond", "gentle", "glad", "grand", "hardy", "humble", "jolly", "keen", "kind",
               "lively", "loyal", "lucid", "merry", "mild", "modest", "neat", "nimble", "noble", "patient",
               "plucky", "polite", "proud", "quick", "quiet", "rapid", "ready", "serene", "sharp", "shy",
               "silent", "sleek", "snug", "solid", "spry", "steady", "sunny", "swift", "tidy", "upbeat",
               "vivid", "warm", "wise", "witty", "young", "zesty")
_NOUNS = ("albatross", "badger", "beaver", "bison", "crane", "dolphin", "egret", "falcon", "ferret", "finch",
          "fox", "gecko", "gibbon", "heron", "ibis", "jackal", "jay", "kestrel", "koala", "lemur", "lynx",
          "magpie", "marten", "mole", "newt", "ocelot", "osprey", "otter", "owl", "panda", "pelican", "puffin",
          "quail", "raven", "robin", "salmon", "seal", "shrike", "sparrow", "stoat", "swan", "tapir", "tern",
          "thrush", "toad", "vole", "walrus", "weasel", "wombat", "wren", "yak", "zebra")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass
class Record:
    """A user's container as `ps -a` and `inspect` show it (a row of the store's database)."""
    id: str
    name: str
    image: str  # image ID (config digest)
    image_ref: str  # as the user gave it
    created: int  # ns since the epoch
    config: dict = field(default_factory=dict)  # {"Path", "Args", "Config", "HostConfig", ...}

    @classmethod
    def _from_row(cls, row) -> "Record":
        return cls(row["id"], row["name"], row["image"], row["image_ref"], int(row["created"]),
                   json.loads(row["config"]))


def insert(db: "MetadataDB", rec: Record, layers: list[str]) -> None:
    """`rec`, and its `layers` (chain IDs) in the index of what containers use (db.py)."""
    try:
        with migrated(db).transaction() as c:
            c.execute("INSERT INTO containers(id, name, image, image_ref, created, layers, config) "
                      "VALUES(?,?,?,?,?,?,?)",
                      (rec.id, rec.name, rec.image, rec.image_ref, rec.created, "[]", json.dumps(rec.config)))
            c.executemany("INSERT OR IGNORE INTO container_layers(chain_id, container) VALUES(?,?)",
                          [(chain, rec.id) for chain in layers])
    except sqlite3.IntegrityError:
        other = get_by_name(db, rec.name)
        raise NameConflict(f'Conflict. The container name "/{rec.name}" is already in use by container '
                           f'"{other.id if other else "?"}". You have to remove (or rename) that container '
                           "to be able to reuse that name.") from None


def delete(db: "MetadataDB", cid: str) -> None:
    with migrated(db).transaction() as c:
        c.execute("DELETE FROM container_layers WHERE container=?", (cid,))
        c.execute("DELETE FROM containers WHERE id=?", (cid,))


def layer_in_use(db: "MetadataDB", chain_id: str) -> bool:
    """Whether a recorded container has the snapshot `chain_id` as one of its layers."""
    return migrated(db).one("SELECT 1 FROM container_layers WHERE chain_id=? LIMIT 1", (chain_id,)) is not None


def get(db: "MetadataDB", cid: str) -> Record | None:
    row = migrated(db).one("SELECT * FROM containers WHERE id=?", (cid,))
    return Record._from_row(row) if row else None


def get_by_name(db: "MetadataDB", name: str) -> Record | None:
    row = migrated(db).one("SELECT * FROM containers WHERE name=?", (name.lstrip("/"),))
    return Record._from_row(row) if row else None


def all_records(db: "MetadataDB") -> list[Record]:
    """Newest first, as `ps` lists them."""
    return [Record._from_row(r) for r in migrated(db).query("SELECT * FROM containers ORDER BY created DESC")]


def resolve(db: "MetadataDB", text: str) -> Record:
    """Docker's order: the full ID, then a name, then a unique ID prefix."""
    if not text:
        raise NoSuchContainer("No such container: ")
    rec = get(db, text) if len(text) == 64 else None
    if rec is None:
        rec = get_by_name(db, text)
    if rec is None and _HEX.match(text):
        rows = migrated(db).query("SELECT * FROM containers WHERE id >= ? AND id < ? LIMIT 2",
                                  (text, text + "g"))
        if len(rows) > 1:
            raise NoSuchContainer(f"multiple IDs found with provided prefix: {text}")
        if rows:
            rec = Record._from_row(rows[0])
    if rec is None:
        raise NoSuchContainer(f"No such container: {text}")
    return rec


def generate_name(db: "MetadataDB") -> str:
    """A free adjective_noun name (a number appended after a few collisions)."""
    for attempt in range(20):
        a, n, k = os.urandom(3)  # no `random` import for this
        name = f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[n % len(_NOUNS)]}"
        if attempt >= 5:
            name += str(k % 100)
        if get_by_name(db, name) is None:
            return name
    return f"soko_{os.urandom(6).hex()}"
