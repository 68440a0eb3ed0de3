"""Taking a new layer's file data from an earlier layer tar (a COPY run again after one file changed).

Reading thousands of files again costs an open, a read and a close each; their
data is already in the previous layer's tar, stored uncompressed, in one file
that is mapped once. The caller says where each file's data is there and what
digest it has; every byte taken is checked against that digest first.
"""
from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from typing import Collection, Mapping


@dataclass(frozen=True)
class Donor:
    """An earlier uncompressed layer tar whose file data a new layer takes instead of
    reading the files again (a COPY run again after one file of thousands changed).

    `members`: name -> (offset of its data in `path`, size, digest of the data[, offset of the
    member, its header]), as the caller recorded them; `vouched`: the digest the caller knows
    the content of each file of the new tree to have. A file's data comes from the donor only
    when both name the same digest and the donor's bytes hash to it; otherwise the file is
    read. The header is made from the file as it is now, except for the names in `same`:
    files the caller knows to be the very inodes the donor's members were written from,
    unchanged since (same name, size, mode, owner, mtime), whose whole member, header and data,
    is taken without looking at the file (`Donated.member`)."""
    path: str
    members: Mapping[bytes, tuple]
    vouched: Mapping[bytes, str]
    same: Collection[bytes] = frozenset()


class Donated:
    """A `Donor`'s tar, mapped: the data of a vouched-for member, checked against its digest."""

    def __init__(self, donor: Donor):
        self.donor = donor
        with open(donor.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else None
        self._view = memoryview(self._map) if self._map is not None else memoryview(b"")
        self.taken = 0

    def data(self, arc: bytes, size: int) -> memoryview | None:
        want = self.donor.vouched.get(arc)
        found = self.donor.members.get(arc)
        if want is None or found is None or found[1] != size or found[2] != want:
            return None
        offset = found[0]
        view = self._view[offset:offset + size]
        algorithm, _, encoded = want.partition(":")
        if len(view) != size or algorithm != "sha256" or hashlib.sha256(view).hexdigest() != encoded:
            return None
        self.taken += 1
        return view

    def member(self, arc: bytes) -> tuple[memoryview, int, int] | None:
        """A `same` file's whole member (header, data, padding), where its data starts in it and
        its size; None: the file is then looked at and written as any other."""
        if arc not in self.donor.same:
            return None
        found = self.donor.members.get(arc)
        if found is None or len(found) < 4 or found[3] is None:
            return None
        data = self.data(arc, found[1])
        if data is None:
            return None
        start, end = found[3], found[0] + found[1] + (-found[1] % 512)
        if not 0 <= start <= found[0] or end > len(self._view):
            return None
        return self._view[start:end], found[0] - start, found[1]

    def close(self) -> None:
        self._view.release()
        if self._map is not None:
            self._map.close()
