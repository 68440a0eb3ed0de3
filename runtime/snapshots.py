"""Snapshots: each layer unpacked once, in overlayfs form, keyed by chain ID.

`<store root>/snapshots/<chain id hex>/` holds one layer's own files (not the
merged tree): whiteouts are 0/0 character devices and opaque directories
carry trusted.overlay.opaque=y, so the directories of an image, top first,
are exactly an overlay mount's lowerdir list. A chain ID names a layer *and
everything below it* (image-spec: ChainID(L0) = DiffID(L0), ChainID(Ln) =
sha256(ChainID(Ln-1) + " " + DiffID(Ln))), so one directory serves every
image and build that shares the stack up to it.

Two processes may unpack (or adopt) the same layer at once: each unpacks into
its own temporary directory and renames it into place without replacing; the
loser deletes its copy. Who uses a snapshot holds it (snapholds.py); it is
taken (`take`) or removed (`soko gc`) only when nobody does.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from storage import digests
from storage.private import private_dir

from . import syscalls as sc
from .snapholds import exclusive, hold
from .errors import SnapshotError, SyscallError

if TYPE_CHECKING:
    from storage.images import Image, ImageStore

Event = Callable[[str, str], None]

def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append(digests.of_bytes(f"{out[-1]} {d}".encode()))
    return out


def _hex(chain_id: str) -> str:
    alg, _, enc = chain_id.partition(":")
    if alg != "sha256" or len(enc) != 64 or any(c not in "0123456789abcdef" for c in enc):
        raise SnapshotError(f"invalid chain ID {chain_id!r}")
    return enc


class Snapshots:
    def __init__(self, store: "ImageStore"):
        self.store = store
        self.root = Path(os.path.abspath(store.root)) / "snapshots"

    def _db(self):
        from .db import migrated

        return migrated(self.store.db)

    def path(self, chain_id: str) -> Path:
        return self.root / _hex(chain_id)

    def has(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def prepare(self, diff_ids: list[str], blobs: list[str | None] | None = None,
                on_event: Event | None = None) -> list[Path]:
        """The snapshot directories of a layer stack (bottom first), unpacking what is missing.

        `blobs` names the stored blob of each layer when known (an image's
        manifest); otherwise the store's diff_id -> blob facts are used."""
        cids = chain_ids(diff_ids)
        out: list[Path] = []
        for i, (diff_id, cid) in enumerate(zip(diff_ids, cids)):
            p = self.path(cid)
            while not hold(str(p)):  # held (snapholds) until the caller's `holding()` block ends
                blob = blobs[i] if blobs and blobs[i] else None
                self._unpack(diff_id, cid, cids[i - 1] if i else None, blob, on_event)
            out.append(p)
        return out

    def hold(self, chain_id: str) -> bool:
        """Hold snapshot `chain_id` as `prepare` does, without unpacking it: False when it is gone
        (a COPY's previous result, hard-linked from: builder/reuse.py)."""
        return hold(str(self.path(chain_id)))

    def prepare_image(self, image: "Image", on_event: Event | None = None) -> list[Path]:
        from storage import mediatypes as mt

        layers = [d for d in image.manifest.layers if mt.is_layer(d.media_type)]
        diff_ids = list(image.config.diff_ids)
        return self.prepare(diff_ids, [d.digest for d in layers], on_event)

    def _blob_for(self, diff_id: str) -> str:
        rows = self.store.layer_blobs(diff_id)
        if not rows:
            raise SnapshotError(f"layer {diff_id} is not in the store")
        rows.sort(key=lambda r: r[1] != "none")  # uncompressed first: fastest to unpack
        return rows[0][0]

    def _unpack(self, diff_id: str, chain_id: str, parent: str | None, blob: str | None,
                on_event: Event | None) -> None:
        from storage.errors import StorageError
        from storage.layers import OVERLAY, apply_blob

        blob = blob or self._blob_for(diff_id)
        private_dir(self.root)
        tmp = self.root / f".unpack-{os.urandom(8).hex()}"
        os.mkdir(tmp, 0o755)
        if on_event:
            on_event("unpack", f"unpacking layer {diff_id[7:19]}")
        try:
            apply_blob(self.store.blobs, blob, tmp, mode=OVERLAY, diff_id=diff_id, atomic=False)
        except StorageError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SnapshotError(f"unpacking layer {diff_id}: {e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._place(tmp, chain_id, diff_id, parent)

    def adopt(self, diff_ids: list[str], tree: Path) -> Path:
        """Make `tree` (one layer's own files, in overlay form) the snapshot of
        the stack `diff_ids` (bottom first); returns the snapshot's path.

        For trees made some other way than unpacking the layer (a build step's
        upper directory, a COPY's staging tree), so the next step need not
        unpack what was just written. `tree` must be on the store's
        filesystem; it is moved into place, or deleted when the snapshot
        exists already (made meanwhile by another process, say): either way
        it is gone afterwards."""
        cids = chain_ids(diff_ids)
        if not cids:
            raise SnapshotError("adopting a snapshot needs at least one layer")
        os.chmod(tree, 0o755)  # the overlay's root takes the top layer's root: as unpacked ones are
        if os.geteuid() == 0:
            os.chown(tree, 0, 0)
        private_dir(self.root)
        self._place(Path(tree), cids[-1], diff_ids[-1], cids[-2] if len(cids) > 1 else None)
        return self.path(cids[-1])

    def _place(self, tmp: Path, chain_id: str, diff_id: str, parent: str | None) -> None:
        """Rename a finished tree into place and record it; the loser of a race deletes its copy.

        Never replaces: a rename onto an existing empty directory would swap
        a snapshot that running overlays may be using."""
        dest = self.path(chain_id)
        try:
            sc.rename_noreplace(str(tmp), str(dest))
        except SyscallError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not dest.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                if e.errno == errno.EXDEV:
                    raise SnapshotError(f"snapshot {chain_id}: {tmp} is not on the store's filesystem") from None
                raise SnapshotError(f"snapshot {chain_id}: {e}") from None
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
        self._db().execute("INSERT OR IGNORE INTO snapshots(chain_id, diff_id, parent, created) "
                           "VALUES(?,?,?,?)", (chain_id, diff_id, parent, time.time()))

    def take(self, chain_id: str, into: Path) -> bool:
        """Move snapshot `chain_id` onto `into` (an empty directory on the store's filesystem) for
        a caller that will change it into another layer's tree (builder/reuse.py: a COPY run again
        after one file of thousands changed). The chain loses its snapshot, unpacked again from
        its layer if ever asked for. Refused (False) while any process holds it (snapholds: a
        build's RUN, view or COPY, this one's too), a container records it as one of its layers,
        or when it is gone."""
        from .records import layer_in_use

        p = self.path(chain_id)
        with exclusive(str(p)) as free:
            # the containers after the lock: `soko create` holds its layers until its record is written
            if not free or layer_in_use(self.store.db, chain_id):
                return False
            try:
                os.rename(p, into)  # replaces the empty `into`; never half a tree
            except OSError:
                return False
        self._db().execute("DELETE FROM snapshots WHERE chain_id=?", (chain_id,))
        return True

    def list(self) -> list[str]:
        try:
            return ["sha256:" + n for n in os.listdir(self.root) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def remove(self, chain_id: str) -> bool:
        """Delete one snapshot unless a process holds it (snapholds); rename first, so no
        half-deleted directory is ever used."""
        return bool(self.remove_unused([chain_id], set))

    def remove_unused(self, chain_ids: list[str], used: Callable[[], set[str]]) -> list[str]:
        """Delete those of `chain_ids` that no process holds and that are not in `used()`, asked
        once their locks are had (a container made meanwhile held its layers until its state
        was saved); returns the deleted ones."""
        trash: list[tuple[str, Path]] = []
        for i in range(0, len(chain_ids), 256):  # a bounded number of descriptors at once
            with ExitStack() as locks:
                free = [c for c in chain_ids[i:i + 256] if locks.enter_context(exclusive(str(self.path(c))))]
                busy = used() if free else set()
                for c in free:
                    if c not in busy:
                        t = self.root / f".remove-{os.urandom(8).hex()}"
                        try:
                            os.rename(self.path(c), t)
                        except OSError:
                            continue
                        trash.append((c, t))
        for c, t in trash:
            shutil.rmtree(t, ignore_errors=True)
            self._db().execute("DELETE FROM snapshots WHERE chain_id=?", (c,))
        return [c for c, _t in trash]

    def clean_temporaries(self, older_than: float = 3600.0) -> int:
        """Remove unpack/remove leftovers of killed processes."""
        n = 0
        now = time.time()
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        for name in names:
            if name.startswith((".unpack-", ".remove-")):
                p = self.root / name
                try:
                    if now - p.stat().st_mtime > older_than:
                        shutil.rmtree(p, ignore_errors=True)
                        n += 1
                except FileNotFoundError:
                    pass
        return n


def _container_layers(store: "ImageStore") -> set[str]:
    """The chain IDs containers (of any state) record as their layers: every state read, for gc,
    which must keep a build step's too (no record; records.layer_in_use answers for one snapshot)."""
    from . import containers

    out: set[str] = set()
    for _d, st in containers.states(store.root):
        if st is not None:
            out.update(getattr(st, "layers", None) or ())
    return out


def prune(store: "ImageStore", keep: Iterable[str] = (), on_event: Event | None = None,
          dry_run: bool = False) -> list[str]:
    """Remove snapshots that no image in the store, no container, nothing in `keep` and no
    process (snapholds: a build in another process) uses.

    For `soko gc`; returns the removed (with dry_run: removable) chain IDs."""
    snaps = Snapshots(store)
    used = set(keep) | _container_layers(store)
    for summary in store.list():
        try:
            img = store.image(summary.manifest_digest)
        except Exception:  # noqa: BLE001 - an unreadable image keeps nothing alive
            continue
        used.update(chain_ids(img.config.diff_ids))
    removed = [cid for cid in snaps.list() if cid not in used]
    if not dry_run:
        removed = snaps.remove_unused(removed, lambda: _container_layers(store))
        snaps.clean_temporaries()
    if on_event:
        for cid in removed:
            on_event("removed", f"snapshot {cid}")
    return removed
