"""Writing layers: a directory tree, a list of changes, or an overlayfs upper
directory becomes a compressed tar blob in the blob store.

One pass: file data is read straight into 1 MiB buffers that are hashed
(diff_id), handed to the compressor (threads), and the compressed output is
hashed (digest) while it is written to a temporary file in the store's
ingest area, which `adopt` then moves into place.

Deterministic: entries in sorted order (whiteouts first in each directory,
as image-spec recommends), numeric uid/gid, no user or group names, integer
mtimes clamped to SOURCE_DATE_EPOCH (or `epoch`) when given.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

from . import compression as comp
from . import layers_tar as tar
from .blobs import WRITEBACK, BlobStore, start_writeback
from .errors import LayerError
from .layers_donor import Donor, Donated
from .mediatypes import LAYER_BY_COMPRESSION

CHUNK = 1 << 20
# The one buffer a zstd (or plain) layer is built in, small enough to stay in the
# feeding core's L2 between the read into it, the diff_id hash and libzstd's copy:
# a 1 MiB one (what gzip's blocks still get) made the 532 MB bench write 0.2-0.3
# CPU-s dearer and half its runs ~0.25 s slower (bench/README.md "Layers").
REUSED_CHUNK = 128 << 10
WHITEOUT_PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
# Overlay bookkeeping and host SELinux labels never belong in an image.
_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")

Progress = Callable[[int], None]


Members = dict[bytes, tuple[int, int, int]]  # a regular file's name -> (offset of its data in the tar, size,
#                                              offset of its member: its header, a PAX one first if any)


@dataclass(frozen=True)
class LayerInfo:
    """What a written layer is: `diff_id` names the uncompressed tar (image
    config rootfs.diff_ids), `digest`/`size` the stored blob (manifest).
    `members`: where each regular file's data is in the tar (`write_layer`)."""
    diff_id: str
    digest: str
    size: int
    compression: str
    media_type: str
    uncompressed_size: int
    members: Members | None = None


@dataclass
class Changes:
    """A filesystem change set relative to `root`, for `write_layer_from_changes`.

    `paths`: added or modified entries (files, links, directories, devices);
    each stands for itself only (a directory's contents are not implied), and
    their parent directories are included automatically. `deleted`: paths
    removed since the parent layer (written as `.wh.NAME`). `opaque`:
    directories whose lower content is hidden entirely (`.wh..wh..opq`)."""
    paths: Sequence[str] = ()
    deleted: Sequence[str] = ()
    opaque: Sequence[str] = ()


def resolve_epoch(epoch: int | None) -> int | None:
    """`epoch` if given, else SOURCE_DATE_EPOCH from the environment, else None."""
    if epoch is not None:
        return int(epoch)
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise LayerError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from None


class _Output:
    """The compressed side: hashed and written to the temporary blob file, whose
    writeback starts every WRITEBACK bytes (the fsync at the end then waits for
    the last few megabytes only, not the whole blob)."""

    def __init__(self, fd: int, hashing: bool):
        self.fd = fd
        self.hash = hashlib.sha256() if hashing else None
        self.size = 0
        self._written_back = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.hash is not None:
            self.hash.update(data)
        view = memoryview(data)
        while view:  # (a flush may hand over tens of megabytes at once)
            n = os.write(self.fd, view[:WRITEBACK])
            view = view[n:]
            self.size += n
            if self.size - self._written_back >= WRITEBACK:
                start_writeback(self.fd, self._written_back, self.size - self._written_back)
                self._written_back = self.size


_ZEROS = memoryview(bytes(CHUNK))


class _TarPipe:
    """The uncompressed side: fills buffers, hashes and hands them on.

    One REUSED_CHUNK buffer serves the whole layer when the writer is done with it on
    return (zstd, none: _Output copies what it gets); else (gzip) a fresh 1 MiB buffer
    per piece, which costs its page faults, ~0.1 CPU-s per 500 MB on the thread that
    feeds the compressor."""

    def __init__(self, writer: comp.CompressWriter, progress: Progress | None):
        self._writer = writer
        self._progress = progress
        self._reuse = not writer.keeps_buffers
        self._chunk = REUSED_CHUNK if self._reuse else CHUNK
        self.hash = hashlib.sha256()
        self.size = 0
        self._new()

    def _new(self) -> None:
        self._buf = bytearray(self._chunk)
        self._view = memoryview(self._buf)
        self._pos = 0

    def _flush(self) -> None:
        data = self._buf if self._pos == self._chunk else bytes(self._view[:self._pos])
        if not self._reuse:
            self._view.release()
        self.hash.update(data)
        self._writer.write(data)
        self.size += len(data)
        if self._progress is not None:
            self._progress(self.size)
        if self._reuse:
            self._pos = 0
        else:
            self._new()

    def write(self, data: bytes) -> None:
        n = len(data)
        if self._pos + n < self._chunk:
            self._view[self._pos:self._pos + n] = data
            self._pos += n
            return
        view = memoryview(data)
        while view:
            if self._pos == self._chunk:
                self._flush()
            take = min(len(view), self._chunk - self._pos)
            self._view[self._pos:self._pos + take] = view[:take]
            self._pos += take
            view = view[take:]

    def skip(self, n: int) -> None:
        """`n` zero bytes (padding)."""
        while n:
            if self._pos == self._chunk:
                self._flush()
            take = min(n, self._chunk - self._pos)
            self._view[self._pos:self._pos + take] = _ZEROS[:take]
            self._pos += take
            n -= take

    @property
    def offset(self) -> int:
        """Bytes of the tar written so far."""
        return self.size + self._pos

    def copy_file(self, fd: int, size: int, path: bytes) -> None:
        remaining = size
        while remaining:
            if self._pos == self._chunk:
                self._flush()
            want = min(remaining, self._chunk - self._pos)
            got = os.readv(fd, [self._view[self._pos:self._pos + want]])
            if not got:
                raise LayerError(f"{os.fsdecode(path)} shrank while the layer was written")
            self._pos += got
            remaining -= got
        self.skip(-size % tar.BLOCK)

    def finish(self) -> None:
        self.write(tar.END_OF_ARCHIVE)
        if self._pos:
            self._flush()
        self._writer.close()


_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _check_name(name: bytes, path: bytes) -> None:
    if name.startswith(WHITEOUT_PREFIX):
        raise LayerError(f"{os.fsdecode(path)}: names starting with .wh. are reserved for whiteouts")


class _Emitter:
    """Turns filesystem objects into tar entries on a `_TarPipe`."""

    def __init__(self, pipe: _TarPipe, epoch: int | None, donor: "Donated | None" = None,
                 members: Members | None = None, written: Mapping[bytes, tuple[int, bytes]] | None = None):
        self.pipe = pipe
        self.epoch = epoch
        self.links: dict[tuple[int, int], bytes] = {}
        self._noatime = os.O_NOATIME if hasattr(os, "O_NOATIME") else 0
        self.donor = donor
        self.written = written  # name -> (inode, content) the caller wrote there (write_layer)
        self.members = members  # filled with each regular file's place, when asked for

    def _mtime(self, st: os.stat_result) -> int:
        mtime = st.st_mtime_ns // 1_000_000_000
        if self.epoch is not None and mtime > self.epoch:
            return self.epoch
        return mtime

    @staticmethod
    def xattrs(path: bytes) -> dict[bytes, bytes]:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return {}
            raise
        out: dict[bytes, bytes] = {}
        for name in names:
            if name.startswith(_SKIP_XATTR_PREFIXES):
                continue
            try:
                out[name.encode("utf-8", "surrogateescape")] = \
                    os.getxattr(path, name, follow_symlinks=False)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
        return out

    def whiteout(self, arc: bytes) -> None:
        self.pipe.write(tar.encode_header(arc, mode=0o644, mtime=0))

    def entry(self, arc: bytes, path: bytes, st: os.stat_result) -> None:
        """Emit `path` (already lstat'ed) as `arc`; directories get a trailing slash."""
        mode = st.st_mode
        common = dict(mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid,
                      mtime=self._mtime(st))
        if stat.S_ISDIR(mode):
            self.pipe.write(tar.encode_header(arc + b"/", typeflag=tar.DIR,
                                              xattrs=self.xattrs(path), **common))
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                self.pipe.write(tar.encode_header(arc, typeflag=tar.LNK, linkname=first, **common))
                return
            self.links[key] = arc
        if stat.S_ISREG(mode):
            start = self.pipe.offset
            data = self.donor.data(arc, st.st_size) if self.donor is not None else None
            if data is None and self.written is not None:
                known = self.written.get(arc)
                if known is not None and known[0] == st.st_ino and len(known[1]) == st.st_size:
                    data = known[1]
            if data is not None:
                self.pipe.write(tar.encode_header(arc, size=st.st_size, typeflag=tar.REG,
                                                  xattrs=self.xattrs(path), **common))
                self._member(arc, st.st_size, start)
                self.pipe.write(data)
                self.pipe.skip(-st.st_size % tar.BLOCK)
                return
            try:
                fd = os.open(path, _O_READ | self._noatime)
            except PermissionError:
                if not self._noatime:
                    raise
                self._noatime = 0  # O_NOATIME needs ownership (or root)
                fd = os.open(path, _O_READ)
            try:
                self.pipe.write(tar.encode_header(arc, size=st.st_size, typeflag=tar.REG,
                                                  xattrs=self.xattrs(path), **common))
                self._member(arc, st.st_size, start)
                self.pipe.copy_file(fd, st.st_size, path)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            self.pipe.write(tar.encode_header(arc, typeflag=tar.SYM, linkname=os.readlink(path),
                                              xattrs=self.xattrs(path), **common))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.pipe.write(tar.encode_header(
                arc, typeflag=tar.CHR if stat.S_ISCHR(mode) else tar.BLK,
                devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                xattrs=self.xattrs(path), **common))
        elif stat.S_ISFIFO(mode):
            self.pipe.write(tar.encode_header(arc, typeflag=tar.FIFO,
                                              xattrs=self.xattrs(path), **common))
        # sockets cannot be archived; tar skips them too


    def _member(self, arc: bytes, size: int, start: int) -> None:
        if self.members is not None:
            self.members[arc] = (self.pipe.offset, size, start)

    def spliced(self, arc: bytes, e: os.DirEntry, dev: int) -> bool:
        """Whether `arc`'s whole member came from the donor (Donor.same): the file is not
        looked at, but its inode (readdir's, no stat) is remembered, as entry() does for a
        first name, so a later name of it is a link member whichever way the first was written."""
        if self.donor is None:
            return False
        found = self.donor.member(arc)
        if found is None:
            return False
        self.links.setdefault((dev, e.inode()), arc)
        member, data_at, size = found
        start = self.pipe.offset
        self.pipe.write(member)
        if self.members is not None:
            self.members[arc] = (start + data_at, size, start)
        return True


def _sorted_dir(path: bytes) -> list[tuple[bytes, os.DirEntry]]:
    """Names and entries, sorted; an entry's lstat is made when asked for (a member taken whole
    from a donor needs none)."""
    with os.scandir(path) as it:
        found = [(e.name, e) for e in it]
    found.sort(key=lambda t: t[0])
    return found


def _is_overlay_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _overlay_xattr(path: bytes, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _walk(emitter: _Emitter, root: bytes, overlay: bool) -> None:
    """Depth first, children sorted by name, whiteouts before their siblings."""
    stack: list[Iterator[tuple[bytes, bytes, os.DirEntry]]] = []

    def listing(path: bytes, arc: bytes) -> Iterator[tuple[bytes, bytes, os.DirEntry]]:
        children = _sorted_dir(path)
        if overlay:
            if arc and any(_overlay_xattr(path, x) == b"y" for x in OVERLAY_OPAQUE_XATTRS):
                emitter.whiteout(arc + OPAQUE)
            rest = []
            for name, e in children:
                if _is_overlay_whiteout(e.stat(follow_symlinks=False)):
                    emitter.whiteout(arc + WHITEOUT_PREFIX + name)
                else:
                    rest.append((name, e))
            children = rest
        for name, e in children:
            yield path + b"/" + name, arc + name, e

    if overlay and any(_overlay_xattr(root, x) == b"y" for x in OVERLAY_OPAQUE_XATTRS):
        emitter.whiteout(OPAQUE)
    dev = os.stat(root).st_dev  # the tree's: a spliced member's inode is remembered with it
    stack.append(listing(root, b""))
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, arc, e = item
        _check_name(os.path.basename(arc), path)
        if emitter.spliced(arc, e, dev):
            continue
        st = e.stat(follow_symlinks=False)
        if overlay:
            _check_overlay_features(path, st)
        emitter.entry(arc, path, st)
        if stat.S_ISDIR(st.st_mode):
            stack.append(listing(path, arc + b"/"))


def _check_overlay_features(path: bytes, st: os.stat_result) -> None:
    """Uppers made with redirect_dir or metacopy refer to lower content we cannot see."""
    what = "trusted.overlay.redirect" if stat.S_ISDIR(st.st_mode) else \
        "trusted.overlay.metacopy" if stat.S_ISREG(st.st_mode) else None
    if what and _overlay_xattr(path, what) is not None:
        raise LayerError(f"{os.fsdecode(path)}: overlay upper uses {what.split('.')[-1]}; "
                         "mount with redirect_dir=off,metacopy=off")


def _split(path: str, what: str) -> tuple[bytes, ...]:
    parts = tuple(p for p in os.fsencode(path).split(b"/") if p and p != b".")
    if not parts or b".." in parts:
        raise LayerError(f"invalid {what} path {path!r}")
    return parts


class _Node:
    __slots__ = ("children", "include", "whiteout", "opaque")

    def __init__(self) -> None:
        self.children: dict[bytes, _Node] = {}
        self.include = False
        self.whiteout = False
        self.opaque = False


def _changes_tree(changes: Changes) -> _Node:
    top = _Node()

    def node(parts: tuple[bytes, ...]) -> _Node:
        cur = top
        for part in parts:
            cur = cur.children.setdefault(part, _Node())
            cur.include = True  # parents come along with what they contain
        return cur

    for p in changes.paths:
        node(_split(p, "changed"))
    for p in changes.opaque:
        node(_split(p, "opaque")).opaque = True
    for p in changes.deleted:
        parts = _split(p, "deleted")
        n = node(parts[:-1]).children.setdefault(parts[-1], _Node())
        n.whiteout = True
    return top


def _walk_changes(emitter: _Emitter, root: bytes, top: _Node) -> None:
    def listing(path: bytes, arc: bytes, n: _Node) -> Iterator[tuple[bytes, bytes, _Node]]:
        if n.opaque:
            emitter.whiteout(arc + OPAQUE)
        names = sorted(n.children)
        for name in names:
            if n.children[name].whiteout:
                emitter.whiteout(arc + WHITEOUT_PREFIX + name)
        for name in names:
            child = n.children[name]
            if child.include:  # else deleted only
                yield path + b"/" + name, arc + name, child

    stack = [listing(root, b"", top)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, arc, n = item
        _check_name(os.path.basename(arc), path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise LayerError(f"changed path {os.fsdecode(arc)} does not exist "
                             f"under {os.fsdecode(root)}") from None
        emitter.entry(arc, path, st)
        if n.children or n.opaque:
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{os.fsdecode(arc)} is not a directory but has changes below it")
            stack.append(listing(path, arc + b"/", n))


def _write(source: Callable[[_Emitter], None], store: BlobStore, compression: str,
           level: int | None, epoch: int | None, media_types: str,
           progress: Progress | None, threads: int | None, donor: Donor | None = None,
           members: Members | None = None, written: Mapping[bytes, tuple[int, bytes]] | None = None) -> LayerInfo:
    comp.check(compression)
    if media_types not in LAYER_BY_COMPRESSION:
        raise LayerError(f"unknown media type family {media_types!r} (use oci or docker)")
    epoch = resolve_epoch(epoch)
    donated = None
    if donor is not None:
        try:
            donated = Donated(donor)
        except OSError:
            donated = None  # gone: every file is read
    tmp = store.new_temp(".layer")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    out = _Output(fd, hashing=compression != comp.NONE)
    writer = comp.open_writer(out, compression, level, threads)
    try:
        pipe = _TarPipe(writer, progress)
        source(_Emitter(pipe, epoch, donated, members, written))
        pipe.finish()
    except BaseException as e:
        writer.abort()
        os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a file vanished, disk full, ...: one line
            where = f"{os.fsdecode(e.filename)}: " if e.filename else ""
            raise LayerError(f"cannot write layer: {where}{e.strerror or e}") from e
        raise
    finally:
        if donated is not None:
            donated.close()
    os.close(fd)
    diff_id = "sha256:" + pipe.hash.hexdigest()
    digest = diff_id if out.hash is None else "sha256:" + out.hash.hexdigest()
    store.adopt(tmp, digest)
    if compression != comp.NONE:  # both codecs are written with their content checksum
        store.note_diff_id(digest, diff_id)
    return LayerInfo(diff_id=diff_id, digest=digest, size=out.size, compression=compression,
                     media_type=LAYER_BY_COMPRESSION[media_types][compression],
                     uncompressed_size=pipe.size, members=members)


def write_layer(src: str | os.PathLike, store: BlobStore, *, compression: str = comp.GZIP,
                level: int | None = None, epoch: int | None = None, media_types: str = "oci",
                progress: Progress | None = None, threads: int | None = None,
                donor: Donor | None = None, members: bool = False,
                written: Mapping[bytes, tuple[int, bytes]] | None = None) -> LayerInfo:
    """The whole tree under `src` as one layer (`soko import`, COPY output). `donor`: an
    earlier layer to take file data from (see Donor); `members`: report where each regular
    file's data is in the tar (LayerInfo.members), to make this layer a donor later;
    `written`: name -> (inode, content) of files the caller has just written from memory,
    taken as they are while the file there is still that inode, of that size (not read again)."""
    root = os.fsencode(src)
    if not os.path.isdir(root):
        raise LayerError(f"not a directory: {os.fsdecode(root)}")
    return _write(lambda em: _walk(em, root, overlay=False), store, compression, level, epoch,
                  media_types, progress, threads, donor, {} if members else None, written)


def write_layer_from_changes(root: str | os.PathLike, changes: Changes, store: BlobStore, *,
                             compression: str = comp.GZIP, level: int | None = None,
                             epoch: int | None = None, media_types: str = "oci",
                             progress: Progress | None = None,
                             threads: int | None = None) -> LayerInfo:
    """A layer of `changes`, taking content and metadata from the tree at `root`."""
    base = os.fsencode(root)
    top = _changes_tree(changes)
    return _write(lambda em: _walk_changes(em, base, top), store, compression, level, epoch,
                  media_types, progress, threads)


def write_layer_from_overlay(upper: str | os.PathLike, store: BlobStore, *,
                             compression: str = comp.GZIP, level: int | None = None,
                             epoch: int | None = None, media_types: str = "oci",
                             progress: Progress | None = None,
                             threads: int | None = None) -> LayerInfo:
    """The overlayfs upper directory `upper` (after a RUN step) as a layer:
    0/0 character devices become `.wh.NAME`, opaque directories
    (trusted.overlay.opaque=y, or user.overlay.opaque with userxattr) get
    `.wh..wh..opq`, overlay xattrs are dropped. The overlay must not be
    mounted with redirect_dir or metacopy (LayerError if the upper uses them)."""
    root = os.fsencode(upper)
    if not os.path.isdir(root):
        raise LayerError(f"not a directory: {os.fsdecode(root)}")
    return _write(lambda em: _walk(em, root, overlay=True), store, compression, level, epoch,
                  media_types, progress, threads)
