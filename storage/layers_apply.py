"""Applying a layer tar (gzip, zstd or plain) onto a directory.

Two modes:
- "plain": onto a merged root filesystem; whiteouts delete lower content.
- "overlay": into an (empty) per-layer directory that will be an overlayfs
  lower dir; whiteouts become 0/0 character devices and opaque directories
  get trusted.overlay.opaque=y. Runtime snapshots use this mode.

Whiteouts follow image-spec layer.md: they only hide lower content, never
what the same layer adds, whatever their position in the tar.

Reading, decompressing and both digests run on helper threads
(layers_stream.py); the main thread parses headers and writes files. Paths are resolved by
`layers_paths.Resolver`, so nothing is ever written outside the target.
Into a fresh directory, the layer is applied into a temporary sibling that
is renamed into place only when everything (digests included) checked out.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from . import layers_tar as tar
from .blobs import BlobStore
from .errors import DigestMismatch, LayerError, StorageError, UnsafePathError
from .layers_paths import Parts, Resolver, split_entry
from .layers_stream import LayerStream

PLAIN = "plain"
OVERLAY = "overlay"
MODES = (PLAIN, OVERLAY)
WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE = "trusted.overlay.opaque"
# A layer must not smuggle in overlayfs control xattrs (redirects, opaque
# markers) that would make the kernel look elsewhere when mounting.
_REFUSED_XATTRS = ("trusted.overlay.", "user.overlay.")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ApplyResult:
    """What unpacking a layer found: its digests and sizes, checked by the caller."""
    diff_id: str             # sha256 of the uncompressed tar
    digest: str              # sha256 of the bytes read (the blob as stored)
    compression: str         # detected from the magic bytes
    size: int                # bytes read
    uncompressed_size: int
    entries: int
    skipped: tuple[str, ...]  # "entry: reason" for what could not be applied (no privilege)


def _line(what: str, e: OSError | ValueError) -> LayerError:
    """An OS error (disk full, EPERM, a name with NUL) as one LayerError line."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return LayerError(f"{what}: {reason}")


@contextmanager
def _one_line(what: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except (OSError, ValueError) as e:
        raise _line(what, e) from e


class _Applier:
    def __init__(self, root_fd: int, mode: str):
        self.res = Resolver(root_fd)
        self.mode = mode
        self.is_root = os.geteuid() == 0
        self.ids = (os.geteuid(), os.getegid())
        self.umask = _umask()
        self.written: set[Parts] = set()   # real paths this layer created
        self.touched: set[Parts] = set()   # their ancestors
        self.whiteouts: set[Parts] = set()  # overlay mode: whiteout devices made here
        self.dirs: list[tuple[Parts, tar.Entry, str]] = []
        self.skipped: list[str] = []
        self.unmapped: set[tuple[int, int]] = set()
        self.count = 0

    # -- driver ---------------------------------------------------------------
    def run(self, stream: tar.ChunkStream) -> None:
        for entry in tar.iter_entries(stream):
            self.count += 1
            self.res.trim()
            name = os.fsdecode(entry.name)
            try:  # (not _one_line: its message and context manager cost ~3 us an entry)
                self._entry(entry, name, stream)
            except StorageError:
                raise
            except (OSError, ValueError) as e:
                raise _line(f"cannot apply layer entry {name!r}", e) from e
        stream.drain()
        with _one_line("cannot set directory attributes"):
            self._finish_dirs()

    def close(self) -> None:
        self.res.close()

    def _mark(self, real: Parts) -> None:
        self.written.add(real)
        p = real[:-1]
        while p and p not in self.touched:
            self.touched.add(p)
            p = p[:-1]

    def _entry(self, e: tar.Entry, name: str, stream: tar.ChunkStream) -> None:
        parts = split_entry(name)
        if not parts:  # "./": the root directory's own attributes
            if e.typeflag != tar.DIR:
                raise UnsafePathError(f"layer entry {name!r} would replace the target itself")
            self.dirs.append(((), e, name))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, name)
            return
        pfd, preal = self.res.dir(parts[:-1], name)  # type: ignore[misc]
        real = preal + (base,)
        t = e.typeflag
        if t in (tar.REG, tar.AREG, tar.CONT):
            self._file(pfd, base, preal, e, stream)
        elif t == tar.DIR:
            self._mkdir(pfd, base, real, e, name)
        elif t == tar.SYM:
            self._symlink(pfd, base, e)
        elif t == tar.LNK:
            if not self._hardlink(pfd, base, real, e, name):
                return
        elif t in (tar.CHR, tar.BLK, tar.FIFO):
            if not self._node(pfd, base, e, name):
                return
        else:
            self.skipped.append(f"{name}: unsupported entry type {t!r}")
            return
        self._mark(real)

    # -- entry kinds ----------------------------------------------------------
    def _clear(self, pfd: int, base: str, keep_dir: bool = False) -> bool:
        """Remove whatever is at `base` (True: an existing directory was kept)."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(base, dir_fd=pfd)
            self.res.invalidate()
        else:
            os.unlink(base, dir_fd=pfd)
            if stat.S_ISLNK(st.st_mode):
                self.res.invalidate()
        return False

    def _file(self, pfd: int, base: str, preal: Parts, e: tar.Entry,
              stream: tar.ChunkStream) -> None:
        mode = e.mode & 0o7777
        # Most files can be created as they must end up (2 syscalls of 6 fewer): the
        # owner they get is the one wanted and the umask takes nothing away. Setuid,
        # setgid and sticky bits still come last, never on a half-written file.
        final = (self.umask is not None and not mode & (self.umask | 0o7000)
                 and self._owned_as_made(e, preal))
        made = mode if final else 0o600
        try:
            fd = os.open(base, _O_NEW, made, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base)
            fd = os.open(base, _O_NEW, made, dir_fd=pfd)
        try:
            for piece in stream.pieces(e.size):
                while piece:
                    n = os.write(fd, piece)
                    piece = piece[n:]
            if not final:
                self._chown(e, base, fd)
                os.fchmod(fd, mode)
            if e.xattrs:
                self._xattrs(fd, e, base)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def _mkdir(self, pfd: int, base: str, real: Parts, e: tar.Entry, name: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            if real in self.whiteouts:
                # overlay: "delete the lower one, then make a new one" = an opaque directory
                os.unlink(base, dir_fd=pfd)
                self.whiteouts.discard(real)
                os.mkdir(base, 0o700, dir_fd=pfd)
                self._set_opaque(real, name)
            elif not self._clear(pfd, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=pfd)
        self.dirs.append((real, e, name))

    def _symlink(self, pfd: int, base: str, e: tar.Entry) -> None:
        # The target is kept as written: it is resolved inside the container later.
        target = os.fsdecode(e.linkname)
        try:
            os.symlink(target, base, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base)
            os.symlink(target, base, dir_fd=pfd)
        self._path_attrs(pfd, base, e, chmod=False)

    def _hardlink(self, pfd: int, base: str, real: Parts, e: tar.Entry, name: str) -> bool:
        link = os.fsdecode(e.linkname)
        lparts = split_entry(link)
        if not lparts:
            raise LayerError(f"layer entry {name!r}: hard link to the root directory")
        src = self.res.dir(lparts[:-1], name, create=False)
        if src is None:
            raise LayerError(f"layer entry {name!r}: hard link target {link!r} does not exist")
        sfd, sreal = src
        if sreal + (lparts[-1],) == real:
            return True  # a link to itself: nothing to do
        try:
            st = os.stat(lparts[-1], dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerError(f"layer entry {name!r}: hard link target {link!r} does not exist") \
                from None
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer entry {name!r}: hard link to directory {link!r}")
        try:
            os.link(lparts[-1], base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            self._clear(pfd, base)
            os.link(lparts[-1], base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        return True

    def _node(self, pfd: int, base: str, e: tar.Entry, name: str) -> bool:
        def make() -> None:
            if e.typeflag == tar.FIFO:
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if e.typeflag == tar.CHR else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(e.devmajor, e.devminor), dir_fd=pfd)
        try:
            try:
                make()
            except FileExistsError:
                self._clear(pfd, base)
                make()
        except PermissionError:
            self.skipped.append(f"{name}: creating device nodes is not permitted")
            return False
        self._path_attrs(pfd, base, e, chmod=True)
        return True

    # -- whiteouts ------------------------------------------------------------
    def _whiteout(self, parts: Parts, name: str) -> None:
        base = parts[-1]
        if base == OPAQUE:
            self._opaque(parts[:-1], name)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk and the like): meaningless here
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in ("", ".", ".."):
            raise UnsafePathError(f"layer entry {name!r} is not a valid whiteout")
        if self.mode == PLAIN:
            parent = self.res.dir(parts[:-1], name, create=False)
            if parent is None:
                return  # nothing there to delete
            pfd, preal = parent
            real = preal + (victim,)
            if real in self.written or real in self.touched:
                # This layer made it: only hide what lower layers had in it.
                self._prune_at(pfd, victim, real)
            else:
                self._clear(pfd, victim)
            return
        pfd, preal = self.res.dir(parts[:-1], name)  # type: ignore[misc]
        real = preal + (victim,)
        if real in self.written or real in self.touched:
            try:
                st = os.stat(victim, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                self._set_opaque(real, name)
            return
        self._clear(pfd, victim)
        try:
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
        except PermissionError:
            raise LayerError(f"layer entry {name!r}: overlay whiteouts need CAP_MKNOD "
                             "(apply in plain mode without it)") from None
        self.whiteouts.add(real)

    def _opaque(self, dir_parts: Parts, name: str) -> None:
        if self.mode == OVERLAY:
            found = self.res.dir(dir_parts, name)
            assert found is not None
            self._set_opaque(found[1], name)
            return
        found = self.res.dir(dir_parts, name, create=False)
        if found is not None:
            self._prune(found[0], found[1])

    def _set_opaque(self, real: Parts, name: str) -> None:
        found = self.res.dir(real, name)
        assert found is not None
        try:
            os.setxattr(found[0], OVERLAY_OPAQUE, b"y")
        except PermissionError:
            raise LayerError(f"layer entry {name!r}: setting {OVERLAY_OPAQUE} needs "
                             "CAP_SYS_ADMIN (apply in plain mode without it)") from None

    def _prune_at(self, pfd: int, base: str, real: Parts) -> None:
        try:
            fd = os.open(base, _O_DIR, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return  # not a directory: nothing below it to hide
            raise
        try:
            self._prune(fd, real)
        finally:
            os.close(fd)

    def _prune(self, fd: int, real: Parts) -> None:
        """Delete everything under directory `real` that this layer did not write."""
        with os.scandir(fd) as it:
            children = [(c.name, c.is_dir(follow_symlinks=False)) for c in it]
        for child, is_dir in children:
            p = real + (child,)
            if p in self.written or p in self.touched:
                if is_dir:
                    self._prune_at(fd, child, p)
            elif is_dir:
                shutil.rmtree(child, dir_fd=fd)
                self.res.invalidate()
            else:
                os.unlink(child, dir_fd=fd)
                self.res.invalidate()

    # -- attributes -----------------------------------------------------------
    def _xattrs(self, target: int | str, e: tar.Entry, name: str) -> None:
        for key, value in e.xattrs.items():
            if key.startswith(_REFUSED_XATTRS):
                self.skipped.append(f"{name}: xattr {key} refused")
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as err:
                if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                    self.skipped.append(f"{name}: xattr {key}: {err.strerror}")
                else:
                    raise

    def _owned_as_made(self, e: tar.Entry, preal: Parts) -> bool:
        """Whether a file made now in directory `preal` already has `e`'s owner (or
        owners are not ours to set): ours, and the group is ours whether or not the
        directory hands its own down (setgid, or a grpid mount)."""
        if not self.is_root:
            return True
        return (e.uid, e.gid) == self.ids and self.res.gid(preal) == e.gid

    def _chown(self, e: tar.Entry, name: str, target: int | str, pfd: int | None = None) -> None:
        """Owners as recorded, when we may (root); in a user namespace ids
        that are not mapped cannot be set: noted once per uid:gid in skipped."""
        if not self.is_root:
            return
        try:
            if pfd is None:
                os.fchown(target, e.uid, e.gid)  # type: ignore[arg-type]
            else:
                os.chown(target, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EPERM):
                raise
            if (e.uid, e.gid) not in self.unmapped:
                self.unmapped.add((e.uid, e.gid))
                self.skipped.append(f"{name}: owner {e.uid}:{e.gid} cannot be set here "
                                    f"({err.strerror}); so for every entry with it")

    def _path_attrs(self, pfd: int, base: str, e: tar.Entry, chmod: bool) -> None:
        """Attributes of something that cannot be opened (symlink, device, fifo)."""
        self._chown(e, base, base, pfd)
        if chmod:
            os.chmod(base, e.mode & 0o7777, dir_fd=pfd)  # just made here: not a symlink
        if e.xattrs:
            # /proc/self/fd/N/name: the directory by fd, the final name not followed.
            self._xattrs(f"/proc/self/fd/{pfd}/{base}", e, base)
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _finish_dirs(self) -> None:
        """Directory attributes last and deepest first, so that creating
        their contents neither fails (read-only modes) nor moves their mtimes."""
        self.res.trim()
        for real, e, name in reversed(self.dirs):
            found = self.res.dir(real, name, create=False)
            if found is None or found[1] != real:
                continue  # replaced later in the same layer
            fd = found[0]
            self._chown(e, name, fd)
            os.fchmod(fd, e.mode & 0o7777)
            self._xattrs(fd, e, name)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))


def _umask() -> int | None:
    """This process's umask, read without changing it (os.umask would, for every
    thread); None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def apply_layer(stream: BinaryIO, target: str | os.PathLike, *, mode: str = PLAIN,
                diff_id: str | None = None, digest: str | None = None,
                atomic: bool | None = None, progress: Progress | None = None,
                stored: bool = False, diff_id_known: bool = False) -> ApplyResult:
    """Apply the layer read from `stream` (compression detected) onto `target`.

    `diff_id` / `digest`: verified in the same pass (DigestMismatch). `stored`: the stream is
    the blob `digest` of a blob store, which verified it when it stored it; with a `diff_id` to
    check what it decompresses to, a compressed blob is not hashed a second time.
    `diff_id_known`: a compressed stream is known to decompress to `diff_id` (apply_blob);
    its tar is not hashed, the codec's checksum checking its bytes.
    `atomic` (default: True when `target` does not exist yet): build in a
    temporary sibling and rename it into place only on success; otherwise
    apply in place, where a failure can leave part of the layer applied."""
    if mode not in MODES:
        raise LayerError(f"unknown apply mode {mode!r} (use plain or overlay)")
    dest = Path(target)
    if atomic is None:
        atomic = not os.path.lexists(dest)
    if atomic:
        if os.path.lexists(dest):
            raise LayerError(f"cannot apply atomically: {dest} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = dest.parent / f".{dest.name}.applying-{secrets.token_hex(6)}"
        os.mkdir(work, 0o755)
    else:
        work = dest
        if os.path.lexists(work) and not work.is_dir():
            raise LayerError(f"cannot apply a layer onto {work}: not a directory")
        work.mkdir(parents=True, exist_ok=True)
    try:
        result = _apply_into(stream, work, mode, diff_id, digest, progress, stored,
                             diff_id if diff_id_known else None)
        if atomic:
            os.rename(work, dest)
    except BaseException:
        if atomic:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return result


def _apply_into(stream: BinaryIO, work: Path, mode: str, diff_id: str | None,
                digest: str | None, progress: Progress | None, stored: bool = False,
                known_diff_id: str | None = None) -> ApplyResult:
    feeder = LayerStream(stream, digest if stored and diff_id is not None else None, known_diff_id)
    root_fd = os.open(work, _O_DIR)
    applier = _Applier(root_fd, mode)
    try:
        chunks: Iterator[bytes] = iter(feeder)
        if progress is not None:
            chunks = _reporting(chunks, progress)
        applier.run(tar.ChunkStream(chunks))
    finally:
        feeder.close()
        applier.close()
        os.close(root_fd)
    actual_diff = feeder.diff_id
    actual_digest = feeder.raw.digest
    if digest is not None and actual_digest != digest:
        raise DigestMismatch(digest, actual_digest, "layer blob")
    if diff_id is not None and actual_diff != diff_id:
        raise DigestMismatch(diff_id, actual_diff, "layer diff_id")
    return ApplyResult(diff_id=actual_diff, digest=actual_digest,
                       compression=feeder.compression, size=feeder.raw.size,
                       uncompressed_size=feeder.uncompressed_size, entries=applier.count,
                       skipped=tuple(applier.skipped))


def _reporting(chunks: Iterator[bytes], progress: Progress) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        progress(done)


def apply_blob(store: BlobStore, digest: str, target: str | os.PathLike, *, mode: str = PLAIN,
               diff_id: str | None = None, atomic: bool | None = None,
               progress: Progress | None = None) -> ApplyResult:
    """Apply the layer blob `digest` from `store`, verifying it on the way: by its diff_id when
    given (the store verified the blob itself when storing it), else by its digest. A blob
    soko compressed itself carries the diff_id it was made from (BlobStore.note_diff_id): when
    that is the one asked for, the tar is not hashed again, the codec's checksum checking it."""
    known = diff_id is not None and store.noted_diff_id(digest) == diff_id
    with store.open(digest) as f:
        return apply_layer(f, target, mode=mode, diff_id=diff_id, digest=digest,
                           atomic=atomic, progress=progress, stored=True, diff_id_known=known)
