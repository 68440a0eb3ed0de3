"""The builder's only door to layer blobs and snapshots (storage.layers, runtime.snapshots).

Keeps the rest of the builder independent of how layers are written,
converted between compressions, and unpacked for lookups.
"""
from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from storage import mediatypes as mt
from storage.model import Descriptor

from .errors import BuildError


@dataclass
class NewLayer:
    """A layer a step has just stored: what the image's config and manifest list for it."""
    diff_id: str
    descriptor: Descriptor
    members: dict[bytes, tuple[int, int, int]] | None = None  # write_dir(members=True): storage.layers Members


def _record(store, info) -> NewLayer:
    store.record_layer(info.diff_id, info.digest, info.compression, info.size)
    return NewLayer(info.diff_id, Descriptor(info.media_type, info.digest, info.size), info.members)


class Pending:
    """A step's layer whose tree is finished but whose tar, digest and blob are still being
    written, in a thread of its own: a "layer whose digest arrives later". Meanwhile the next
    RUN step may already run on the tree (runtime.build.run_step's `top`), since the tree no
    longer changes; the executor records the layer once `result` has it. `finish(layer)` (the
    tree made a snapshot, say) runs in the thread that asks for the result, after the writer
    ended and before `result` returns; `close()` runs after it whatever happened, once."""

    def __init__(self, tree: Path, write: Callable[[], NewLayer], finish: Callable[[NewLayer], None],
                 close: Callable[[], None]):
        self.tree = tree
        self._write, self._finish, self._close = write, finish, close
        self._layer: NewLayer | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="layer-writer")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._layer = self._write()
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result
            self._error = e

    def result(self) -> NewLayer:
        """The layer, once written and finished; the writer's or `finish`'s error otherwise."""
        self._thread.join()
        if not self._closed:
            self._closed = True
            try:
                if self._error is None:
                    assert self._layer is not None
                    self._finish(self._layer)
            except BaseException as e:  # noqa: BLE001 - raised below, after close
                self._error = e
            finally:
                self._close()
        if self._error is not None:
            raise self._error
        return self._layer  # type: ignore[return-value]


def write_dir(store, path: Path, compression: str, epoch: int | None, donor=None, members: bool = False,
              written=None) -> NewLayer:
    """A fresh directory tree (COPY/ADD/WORKDIR output) as a stored layer; `donor`, `members`:
    see storage.layers.Donor (reuse.py makes and keeps them); `written`: see write_layer."""
    from storage.layers import write_layer

    return _record(store, write_layer(path, store.blobs, compression=compression, epoch=epoch, donor=donor,
                                      members=members, written=written))


def uncompressed_path(store, diff_id: str) -> str | None:
    """Where layer `diff_id` is stored as a plain tar, if it is."""
    return str(store.blobs.path(diff_id)) if store.blobs.has(diff_id) else None


def write_upper(store, upper: Path, compression: str, epoch: int | None) -> NewLayer:
    """An overlay upper directory (a RUN step's changes) as a stored layer."""
    from storage.layers import write_layer_from_overlay

    return _record(store, write_layer_from_overlay(upper, store.blobs, compression=compression, epoch=epoch))


def chain_id(diff_ids: list[str]) -> str:
    from runtime.snapshots import chain_ids

    return chain_ids(diff_ids)[-1]


def lower_dirs(store, diff_ids: list[str]) -> list[Path]:
    """The snapshot directories of a layer stack, bottom first (unpacked when missing)."""
    from runtime.snapshots import Snapshots

    return Snapshots(store).prepare(list(diff_ids))


def adopt(store, diff_ids: list[str], directory: Path) -> bool:
    """Keep a layer's own tree (a COPY staging directory, a RUN upper, both in
    overlay form) as the snapshot of the stack `diff_ids`, so the next step
    does not unpack the layer it has just written. True when this tree became
    the snapshot; False when one existed (the tree is then deleted)."""
    from runtime.snapshots import Snapshots

    ino = os.lstat(directory).st_ino
    return os.lstat(Snapshots(store).adopt(diff_ids, directory)).st_ino == ino


def descriptor_for(store, diff_id: str, compression: str) -> Descriptor:
    """A stored blob of layer `diff_id` in `compression`, converting one that
    exists in another compression when needed (a cache hit after --compression changed)."""
    rows = store.layer_blobs(diff_id)
    if not rows:
        raise BuildError(f"layer {diff_id} is not in the store")
    for digest, comp, size in rows:
        if comp == compression:
            return Descriptor(mt.LAYER_BY_COMPRESSION["oci"][comp], digest, size)
    return _convert(store, diff_id, rows[0][0], compression)


def _convert(store, diff_id: str, source: str, compression: str) -> Descriptor:
    from storage import compression as comp
    from storage.digests import DigestingReader

    with store.blobs.open(source) as raw:
        reader = DigestingReader(comp.open_reader(raw))
        with store.blobs.writer() as w:
            writer = comp.open_writer(w, compression)
            while chunk := reader.read(1 << 20):
                writer.write(chunk)
            writer.close()
            if reader.digest != diff_id:
                w.abort()
                raise BuildError(f"layer blob {source} does not hold {diff_id}")
            digest = w.commit()
    size = store.blobs.size(digest)
    store.record_layer(diff_id, digest, compression, size)
    return Descriptor(mt.LAYER_BY_COMPRESSION["oci"][compression], digest, size)


def oci_descriptor(d: Descriptor) -> Descriptor:
    """A base image's layer descriptor with its OCI media type (same bytes)."""
    comp = mt.layer_compression(d.media_type)
    if d.media_type in mt.LAYER_BY_COMPRESSION["oci"].values() or comp is None or "foreign" in d.media_type \
            or "nondistributable" in d.media_type:
        return d
    return Descriptor(mt.LAYER_BY_COMPRESSION["oci"][comp], d.digest, d.size, d.annotations, d.platform, d.urls)


class RootView:
    """Read-only lookups in a state's filesystem (its layers, unpacked once as snapshots)."""

    def __init__(self, store, diff_ids: list[str] | Callable[[], list[str]],
                 ready: Callable[[list[str]], None] | None = None):
        self.store = store
        self._ids = diff_ids  # or how to get them, on first use
        self._ready = ready   # makes sure the layers' blobs are stored (StepContext.need)
        self._view = None

    @property
    def diff_ids(self) -> list[str]:
        if callable(self._ids):
            self._ids = list(self._ids())
        return list(self._ids)

    @property
    def view(self):
        if self._view is None:
            from runtime.build import layer_view

            if self._ready is not None:
                self._ready(self.diff_ids)
            self._view = layer_view(self.store, self.diff_ids)
        return self._view

    def lstat(self, path: str) -> os.stat_result | None:
        _, e = self.view.resolve(path, follow_last=False)
        return e.st if e else None

    def stat(self, path: str) -> os.stat_result | None:
        return self.view.stat(path)

    def resolve(self, path: str, follow_last: bool = True):
        """(components with symlinks resolved, entry or None)."""
        return self.view.resolve(path, follow_last)

    def read_file(self, path: str) -> bytes | None:
        return self.view.read_file(path)

    def host_path(self, path: str, follow_last: bool = True) -> tuple[str, os.stat_result] | None:
        _, e = self.view.resolve(path, follow_last)
        return (e.host_path, e.st) if e else None

    def listdir(self, path: str) -> list[str]:
        """Names in a directory of the merged tree (symlinks in `path` followed)."""
        w = self.view.walk(path)
        if w.node is None or not stat.S_ISDIR(w.node.st_mode):
            return []
        return sorted(self.view.listdir("/".join(w.parts)))
