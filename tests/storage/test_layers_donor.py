"""A new layer taking its files' data from an earlier uncompressed layer tar (storage.layers.Donor):
the same bytes as reading every file, and never bytes that do not hash to what was vouched for."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from storage.blobs import BlobStore
from storage.layers import Donor, write_layer
from tests.storage.test_layers_support import tar_members


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree(root: Path, n: int = 30) -> dict[bytes, str]:
    """Files of varied sizes (padding in every shape); returns name -> digest."""
    (root / "d" / "e").mkdir(parents=True)
    out = {}
    for i in range(n):
        rel = f"d/{'e/' if i % 3 else ''}f{i:02d}"
        data = os.urandom(i * 97 % 1500) + b"x" * (i % 5)
        (root / rel).write_bytes(data)
        os.utime(root / rel, (1_600_000_000 + i,) * 2)
        out[rel.encode()] = digest(data)
    os.symlink("f01", root / "d" / "link")
    return out


def donor_of(store: BlobStore, src: Path, vouched: dict[bytes, str]) -> tuple[Donor, dict]:
    first = write_layer(src, store, compression="none", members=True)
    members = {k: (off, size, vouched[k], start) for k, (off, size, start) in first.members.items()}
    return Donor(str(store.path(first.diff_id)), members, vouched), first.members


def test_members_say_where_each_file_is(tmp_path, store):
    src = tmp_path / "src"
    digests = tree(src)
    info = write_layer(src, store, compression="none", members=True)
    blob = store.read_bytes(info.digest)
    assert set(info.members) == set(digests)
    for name, (offset, size, start) in info.members.items():
        assert digest(blob[offset:offset + size]) == digests[name]
        assert blob[start:start + 100].rstrip(b"\0") == name  # the member's header (names < 100 bytes)
    assert write_layer(src, store, compression="none").members is None  # only when asked


def test_a_layer_from_a_donor_is_the_layer_read_from_the_files(tmp_path, store, monkeypatch):
    src = tmp_path / "src"
    digests = tree(src)
    donor, _ = donor_of(store, src, digests)
    (src / "d/e/f04").write_bytes(b"changed")  # one file differs from the donor: read from the tree
    digests[b"d/e/f04"] = digest(b"changed")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **kw: (opened.append(p), real_open(p, *a, **kw))[1])
    spliced = write_layer(src, store, compression="none", donor=Donor(donor.path, donor.members, digests))
    monkeypatch.undo()
    read = write_layer(src, store, compression="none")
    assert (spliced.diff_id, spliced.digest) == (read.diff_id, read.digest)
    files = [p for p in opened if isinstance(p, bytes) and b"/d/" in p]
    assert files == [os.fsencode(src / "d/e/f04")]  # only the changed file was opened


def test_donor_bytes_that_do_not_hash_to_the_digest_are_not_taken(tmp_path, store):
    src = tmp_path / "src"
    digests = tree(src)
    first = write_layer(src, store, compression="none", members=True)
    bad = tmp_path / "corrupt.tar"
    shutil.copyfile(store.path(first.diff_id), bad)
    offset, size, _start = first.members[b"d/e/f05"]
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    members = {k: (off, sz, digests[k], start) for k, (off, sz, start) in first.members.items()}
    again = write_layer(src, store, compression="none", donor=Donor(str(bad), members, digests))
    assert again.diff_id == first.diff_id  # f05 read from the file instead
    # taken whole (header and data), the bytes are checked all the same
    whole = write_layer(src, store, compression="none", donor=Donor(str(bad), members, digests, frozenset(digests)))
    assert whole.diff_id == first.diff_id
    assert again.diff_id == first.diff_id  # f05 read from the file instead
    by = {m.name: m for m in tar_members(store.read_bytes(again.digest))}
    assert by["d/e/f05"].size == size


def test_only_what_the_caller_vouches_for_is_taken(tmp_path, store):
    """The donor's data stands in for a file only under the digest the caller gives for that file:
    a file vouched for with another digest (or not at all) is read."""
    src = tmp_path / "src"
    digests = tree(src)
    donor, _ = donor_of(store, src, digests)
    (src / "d/f00").write_bytes(b"")  # same name, new content, vouched for with its old digest:
    os.utime(src / "d/f00", (1_600_000_000,) * 2)
    lied = write_layer(src, store, compression="none",
                       donor=Donor(donor.path, donor.members, {b"d/f00": digests[b"d/f00"]}))
    # the size differs (0 against the donor's), so nothing is taken
    assert lied.diff_id == write_layer(src, store, compression="none").diff_id
    none = write_layer(src, store, compression="none", donor=Donor(donor.path, donor.members, {}))
    assert none.diff_id == lied.diff_id


def test_a_missing_donor_tar_means_reading_every_file(tmp_path, store):
    src = tmp_path / "src"
    digests = tree(src)
    donor, _ = donor_of(store, src, digests)
    gone = Donor(str(tmp_path / "no-such.tar"), donor.members, digests)
    assert write_layer(src, store, compression="none", donor=gone).diff_id == \
        write_layer(src, store, compression="none").diff_id


def test_written_content_is_taken_only_from_the_inode_it_was_written_to(tmp_path, store, monkeypatch):
    """write_layer(written=): bytes the caller has just written to a file stand in for reading it,
    while the file there is that inode, of that size; any other file is read."""
    src = tmp_path / "src"
    tree(src)
    plain = write_layer(src, store, compression="none")
    names = [b"d/f00", b"d/e/f01", b"d/f03"]
    written = {n: (os.lstat(src / os.fsdecode(n)).st_ino, (src / os.fsdecode(n)).read_bytes()) for n in names}
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **kw: (opened.append(p), real_open(p, *a, **kw))[1])
    taken = write_layer(src, store, compression="none", written=written)
    assert taken.diff_id == plain.diff_id
    assert not {os.fsencode(src / os.fsdecode(n)) for n in names} & set(opened)  # not read
    opened.clear()
    # the same names, claimed for other inodes (or with another size): read from the tree
    stale = {b"d/f00": (written[b"d/f00"][0] + 1, b"X" * len(written[b"d/f00"][1])),
             b"d/e/f01": (written[b"d/e/f01"][0], written[b"d/e/f01"][1] + b"more")}
    assert write_layer(src, store, compression="none", written=stale).diff_id == plain.diff_id
    assert {os.fsencode(src / "d/f00"), os.fsencode(src / "d/e/f01")} <= set(opened)


def test_members_taken_whole_give_the_layer_read_from_the_files(tmp_path, store, monkeypatch):
    """`Donor.same`: files the caller knows to be the very inodes the donor was written from have
    their whole member copied, header included, without being looked at; the others (a changed
    file, one with no member offset recorded, a symlink) are read as ever."""
    src = tmp_path / "src"
    digests = tree(src, n=300)
    first = write_layer(src, store, compression="none", members=True)
    (src / "d/e/f04").write_bytes(b"changed")
    digests[b"d/e/f04"] = digest(b"changed")
    (src / "d/e/f05").unlink()
    del digests[b"d/e/f05"]
    os.chmod(src / "d/f06", 0o600)  # not vouched as the same: its header is made again
    members = {k: (off, size, digests.get(k, ""), None if k == b"d/e/f07" else start)
               for k, (off, size, start) in first.members.items()}
    same = frozenset(set(digests) - {b"d/e/f04", b"d/f06"})
    looked = []  # listxattr: once for each file whose header is made
    monkeypatch.setattr(os, "listxattr", lambda p, *a, **kw: (looked.append(p), [])[1])
    taken = write_layer(src, store, compression="none", members=True,
                        donor=Donor(str(store.path(first.diff_id)), members, digests, same))
    monkeypatch.undo()
    read = write_layer(src, store, compression="none", members=True)
    assert taken.diff_id == read.diff_id
    assert taken.members == read.members  # a donor in turn: the same offsets
    files = sorted(p for p in looked if b"/f" in p)
    assert files == sorted(os.fsencode(src / n) for n in ("d/e/f04", "d/f06", "d/e/f07"))


def test_a_hard_link_to_a_file_taken_whole_is_still_a_link(tmp_path, store):
    """A file whose whole member comes from the donor is the first name of its inode all the
    same: a second name of it further on is a link member, as when the files are read (it was
    written again as a whole file: another diff_id, a bigger layer)."""
    src = tmp_path / "src"
    digests = tree(src)
    os.link(src / "d/e/f01", src / "d/e/z-second-name")
    digests[b"d/e/z-second-name"] = digests[b"d/e/f01"]
    donor, _ = donor_of(store, src, digests)
    whole = Donor(donor.path, donor.members, digests, frozenset(donor.members))
    spliced = write_layer(src, store, compression="none", donor=whole)
    read = write_layer(src, store, compression="none")
    assert (spliced.diff_id, spliced.digest) == (read.diff_id, read.digest)
