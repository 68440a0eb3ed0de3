"""When a COPY runs again because one file changed, the others need not be written again.

The previous result of the same COPY (same parent step, same instruction:
its "family") is still on disk as a snapshot. A file whose content, mode,
owner and mtime equal what this COPY would write there is hard-linked from
that snapshot instead of created: on ext4 a link costs a tenth of a create
plus write. Snapshots are read-only overlay lower layers, so sharing inodes
between them is safe; the layer written from the tree is unchanged by it
(each inode appears once in it, as a regular file).

Each family keeps one record (`builder_copy_family`): the snapshot, its
layer's diff_id, the time the record was begun, and per file the lstat it
had (size, mtime, inode, mode), the digest of its content and where its data
is in the layer's tar. A snapshot file is linked only while its lstat is the
recorded one and not racy (racy.py), and its digest is the source's. The new
layer's tar then takes the linked files' whole members, header and data,
from the previous tar (storage.layers.Donor `same`: the data checked against
the digest) instead of looking at each file again, when that tar is stored
uncompressed.

A COPY (not ADD) first tries to take the previous result's snapshot whole
(`start`: runtime.snapshots.Snapshots.take moves it into the COPY's staging
directory; refused while any process holds it, runtime/snapholds.py, or a
container records it: then it is held while files are linked from it). The tree then
starts as the previous result: a file that passes the same checks is kept
where it is, without even a link; anything else at a path the COPY writes is
removed first, and what the COPY did not place is swept away at the end
(tree.Tree, `placed`). The old chain loses its snapshot (unpacked again from its
layer if ever needed); files are never changed in place, since their inodes
may be shared with older snapshots.
"""
from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from . import layerio
from .racy import racy
from .tree import remove

_File = tuple[int, int, int, int, str]  # size, mtime_ns, inode, st_mode, digest
# a family record's file: [*_File, offset of its data in the layer tar, offset of its member] (None, None:
# not in the tar as a member of its own); records made before the member's offset have 6 fields


class Reuse:
    def __init__(self, store, family: str):
        """`family`: the COPY's key without its sources (table in cache.MIGRATIONS)."""
        from runtime.snapshots import Snapshots

        self.store = store
        self.family = family
        self.snaps = Snapshots(store)
        self.placed: dict[str, _File] = {}  # what this COPY wrote or linked, by path in the tree
        self.linked: set[str] = set()
        self.started = time.time_ns()  # before anything is written: the new record's `checked`
        self.donor: str | None = None
        self.taken = False  # the donor is the tree itself (take)
        self._chain: str | None = None
        self._files: dict[str, list] = {}  # the donor's record: path -> [*_File, data offset, member offset]
        self._checked = 0
        self._diff_id: str | None = None
        row = store.db.one("SELECT chain_id, record FROM builder_copy_family WHERE family=?", (family,))
        if row is not None and row[1] and self.snaps.has(row[0]):
            rec = json.loads(row[1])
            self.donor = str(self.snaps.path(row[0]))
            self._chain = row[0]
            self._files, self._checked, self._diff_id = rec["files"], rec["checked"], rec["diff_id"]

    def start(self, root: Path, may_take: bool) -> bool:
        """Before anything is placed: move the previous result's snapshot onto `root` (the COPY's
        empty staging directory) to be changed into this result, when `may_take` and no process
        uses it; True when done (`root` then holds that tree). Otherwise the snapshot is held
        (shared, until the build ends: runtime.snapholds) while files are linked from it."""
        if self._chain is None:
            return False
        if may_take and self.snaps.take(self._chain, root):
            self.donor, self.taken = str(root), True
            return True
        if not self.snaps.hold(self._chain):  # taken or removed meanwhile, by another process
            self.donor = None
        return False

    def link(self, rel: str, target: Path | str, digest: str, size: int, mode: int, uid: int, gid: int,
             mtime_ns: int) -> bool:
        """Hard-link `target` from the donor when it holds exactly this file."""
        where = rel.rpartition("/")[0]
        return self.link_dir(where, os.path.dirname(str(target)),
                             [(os.path.basename(str(target)), digest, size, mode, uid, gid, mtime_ns)])[0]

    def link_dir(self, where: str, target_dir: str, files: list[tuple]) -> list[bool]:
        """`link` for files of one directory (`where` in the tree, `target_dir` on the host), each
        (name, digest or None, size, mode, uid, gid, mtime_ns): whether each was linked. Thousands
        of files: the directories are looked up once, the loop does what each file needs only."""
        out = [False] * len(files)
        if self.donor is None:
            return out
        try:
            donor_dir = _open_dir(os.path.join(self.donor, where) if where else self.donor)
        except (FileNotFoundError, NotADirectoryError):
            return out
        try:
            if self.taken:  # the tree is the donor: what is kept stays, the rest is cleared
                self._link_in(donor_dir, None, where, files, out)
                for (name, *_), ok in zip(files, out):
                    if not ok:
                        _clear(os.path.join(target_dir, name))
                return out
            into = _open_dir(target_dir)
            try:
                self._link_in(donor_dir, into, where, files, out)
            finally:
                os.close(into)
        finally:
            os.close(donor_dir)
        return out

    def _link_in(self, donor_dir: int, into: int | None, where: str, files: list[tuple], out: list[bool]) -> None:
        """link_dir's loop, both directories open (only while their files are linked: a tree may
        have more directories than the process may hold descriptors); `into` None: the file is
        kept where it is (take)."""
        known_files, checked, placed, linked = self._files, self._checked, self.placed, self.linked
        prefix = where + "/" if where else ""
        for i, (name, digest, size, mode, uid, gid, mtime_ns) in enumerate(files):
            rel = prefix + name
            known = known_files.get(rel)
            if known is None or digest is None or known[4] != digest:
                continue
            try:
                st = os.stat(name, dir_fd=donor_dir, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode) != tuple(known[:4]) \
                    or racy(st.st_mtime_ns, checked):
                continue  # changed since it was recorded (or may have, within a clock tick)
            if not (stat.S_ISREG(st.st_mode) and st.st_size == size and stat.S_IMODE(st.st_mode) == mode
                    and st.st_uid == uid and st.st_gid == gid and st.st_mtime_ns == mtime_ns):
                continue
            if into is not None:
                try:
                    os.link(name, name, src_dir_fd=donor_dir, dst_dir_fd=into, follow_symlinks=False)
                except OSError:
                    continue
            placed[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, digest)
            linked.add(rel)
            out[i] = True

    def written(self, rel: str, st: os.stat_result, digest: str) -> None:
        self.placed[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, digest)
        self.linked.discard(rel)

    def replaced(self, rel: str) -> None:
        """Something else (a directory, a symlink, bytes from memory) now stands at `rel`: a file
        linked there earlier in this COPY no longer is, and its member must not be taken whole."""
        self.linked.discard(rel)

    def donor_layer(self):
        """The previous layer's tar as a storage.layers.Donor for the files linked from its
        snapshot (the very inodes it was written from; a file written again is read, so the
        tar always holds what the tree holds), or None (no previous result, or its layer is
        not stored uncompressed)."""
        from storage.layers import Donor

        path = layerio.uncompressed_path(self.store, self._diff_id) if self._diff_id else None
        if self.donor is None or path is None:
            return None
        members = {os.fsencode(rel): (f[5], f[0], f[4], f[6] if len(f) > 6 else None)
                   for rel, f in self._files.items() if f[5] is not None}
        linked = {os.fsencode(rel): self.placed[rel][4] for rel in self.linked}
        # a linked or kept file is the very inode the donor's member was written from, its lstat as
        # recorded and its owner the step's (link_dir): its member is taken whole
        return Donor(path, members, linked, frozenset(linked))

    def record(self, layer: "layerio.NewLayer") -> str:
        """The family's record for the tree just written as `layer` (what `remember` keeps)."""
        where = layer.members or {}
        nowhere = (None, None, None)
        files = {rel: [*p, m[0], m[2]] for rel, p in self.placed.items()
                 for m in (where.get(os.fsencode(rel), nowhere),)}
        return json.dumps({"diff_id": layer.diff_id, "checked": self.started, "files": files})

    def remember(self, chain_id: str, record: str) -> None:
        """After the tree became snapshot `chain_id` (`record`: made by `record` for its layer):
        the family's next donor."""
        if not os.path.isdir(self.snaps.path(chain_id)):
            return
        self.store.db.execute("INSERT INTO builder_copy_family(family, chain_id, record) VALUES(?,?,?) "
                              "ON CONFLICT(family) DO UPDATE SET chain_id=excluded.chain_id, record=excluded.record",
                              (self.family, chain_id, record))


def _clear(path: str) -> None:
    """Whatever is at `path` in a taken tree, gone (a file is never rewritten in place: its inode
    may be another snapshot's too)."""
    try:
        remove(path)
    except FileNotFoundError:
        pass


def _open_dir(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
