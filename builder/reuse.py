"""When a COPY runs again because one file changed, the others need not be written again.

The previous result of the same COPY (same parent step, same instruction:
its "family") is still on disk as a snapshot. A file whose content, mode,
owner and mtime equal what this COPY would write there is hard-linked from
that snapshot instead of created: on ext4 a link costs a tenth of a create
plus write. Snapshots are read-only overlay lower layers, so sharing inodes
between them is safe; the layer written from the tree is unchanged by it
(each inode appears once in it, as a regular file).

Content is compared by digest: the source's is known from the cache key,
the snapshot file's was recorded when it was written.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

class Reuse:
    def __init__(self, store, hashes, family: str):
        """`family`: the COPY's key without its sources (table in cache.MIGRATIONS)."""
        from runtime.snapshots import Snapshots

        self.store = store
        self.hashes = hashes
        self.family = family
        self.snaps = Snapshots(store)
        self.placed: list[tuple[str, os.stat_result, str]] = []  # rel, the file's lstat, digest
        self.started = time.time_ns()  # before anything is written: HashCache's `checked`
        self.donor: str | None = None
        row = store.db.one("SELECT chain_id FROM builder_copy_family WHERE family=?", (family,))
        if row is not None and self.snaps.has(row[0]):
            self.donor = str(self.snaps.path(row[0]))

    def link(self, rel: str, target: Path | str, digest: str, size: int, mode: int, uid: int, gid: int,
             mtime_ns: int) -> bool:
        """Hard-link `target` from the donor when it holds exactly this file."""
        if self.donor is None:
            return False
        cand = os.path.join(self.donor, rel)
        try:
            st = os.lstat(cand)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not (stat.S_ISREG(st.st_mode) and st.st_size == size and stat.S_IMODE(st.st_mode) == mode
                and st.st_uid == uid and st.st_gid == gid and st.st_mtime_ns == mtime_ns):
            return False
        if self.hashes.known(cand, st, self.donor) != digest:
            return False
        try:
            os.link(cand, target)
        except OSError:
            return False
        self.placed.append((rel, st, digest))
        return True

    def written(self, rel: str, st: os.stat_result, digest: str) -> None:
        self.placed.append((rel, st, digest))

    def remember(self, chain_id: str) -> None:
        """After the tree became snapshot `chain_id`: it is the family's next donor."""
        path = str(self.snaps.path(chain_id))
        if not os.path.isdir(path):
            return
        for rel, st, digest in self.placed:
            self.hashes.remember(os.path.join(path, rel), st, digest, self.started)
        if self.donor is not None and self.donor != path:
            self.hashes.forget_under(self.donor)
        self.hashes.flush()
        self.store.db.execute("INSERT INTO builder_copy_family(family, chain_id) VALUES(?,?) "
                              "ON CONFLICT(family) DO UPDATE SET chain_id=excluded.chain_id", (self.family, chain_id))
