"""A step's earlier result: the store's own cache first, then --cache-from (builder/CACHE.md).

The local cache holds the whole config after each step; an imported step
holds only the history entry it added and its layer, because everything
else in the config follows from the Dockerfile (metadata steps are applied
whether they hit or not). Both give the same config: a stage that hits every
step from an exported cache ends with the image the exporter built.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.model import Descriptor, ImageConfig

from . import layerio
from .cache import BuildCache, Entry
from .dispatch import StageState
from .stepctx import Job

if TYPE_CHECKING:  # --cache-from's machinery: loaded by the builds that use it
    from .cacheimport import Found, Imports


@dataclass
class Hit:
    """A step's earlier result, local or imported, as the executor applies it."""
    key: str                            # the step key the stage continues from
    config: dict | None = None          # local: the whole config after the step
    history: dict | None = None         # imported: the history entry the step added
    diff_id: str | None = None
    descriptor: Descriptor | None = None  # imported: its blob, where the cache keeps it
    link: bool = False                  # a --link layer found by content: the step writes its own history entry

    @property
    def imported(self) -> bool:
        return self.config is None


class Finder:
    def __init__(self, store, cache: BuildCache, imports: Imports | None, compression: str):
        self.store = store
        self.cache = cache
        self.imports = imports
        self.compression = compression
        self._adopt: list[tuple[str, dict, str | None]] = []  # imported hits to keep in the local cache
        self._lock = threading.Lock()

    # -- finding -------------------------------------------------------------------------
    def find(self, state: StageState, job: Job, run_plain: bool) -> Hit | None:
        """The step's result, if known: by its fast key (an alias), its key, its --link
        layer, or (`run_plain`: metadata steps and plain RUNs) a followed plain image."""
        if job.fast_key is not None and job.fast_lookup:
            hit = self._by_key(job.fast_key)
            if hit is not None:
                return hit
        key = job.resolve()
        hit = self._by_key(key)
        if hit is None and job.link_key is not None:
            hit = self._link(job.link_key, key)
        if hit is None and run_plain and job.history and state.follow and self.imports is not None:
            f = self.imports.follow(state.follow, key, job.created_by, job.produce is not None)
            if f is not None:
                hit = _imported(f)
        return hit

    def next_key(self, job: Job) -> str:
        """The key a step leaves its stage at, without running or applying it (the dry pass
        past a miss): a COPY --from's step key comes from its alias, or from the files."""
        if job.fast_key is not None and job.fast_lookup:
            hit = self._by_key(job.fast_key)
            if hit is not None:
                return hit.key
        return job.resolve()

    def _by_key(self, key: str) -> Hit | None:
        e = self.cache.get(key)
        if e is not None and e.config.get("alias"):
            return self._by_key(e.config["alias"])
        if e is not None and not e.config.get("link"):
            return Hit(e.key, config=e.config, diff_id=e.diff_id)
        if self.imports is not None:
            f = self.imports.lookup(key)
            if f is not None:
                return _imported(f)
        return None

    def _link(self, link_key: str, key: str) -> Hit | None:
        e: Entry | None = self.cache.get(link_key)
        if e is not None:
            d = layerio.descriptor_for(self.store, e.diff_id, self.compression)  # type: ignore[arg-type]
            return Hit(key, diff_id=e.diff_id, descriptor=d, link=True)
        layer = self.imports.link_layer(link_key) if self.imports is not None else None
        if layer is not None:
            return Hit(key, diff_id=layer.diff_id, descriptor=layer.descriptor, link=True)
        return None

    # -- applying ------------------------------------------------------------------------
    def apply(self, state: StageState, hit: Hit) -> None:
        """The stage after the step (--link hits are recorded by the caller, with a new entry)."""
        if hit.config is not None:
            state.config = ImageConfig(hit.config).changed()
            if hit.diff_id is not None:
                d = layerio.descriptor_for(self.store, hit.diff_id, self.compression)
                self.cache.hold_more(hit.key, [d.digest])
                state.layers.append(d)
        else:
            if hit.history is not None:
                entry = dict(hit.history)
                state.config.history.append(entry)
                if entry.get("created"):
                    state.config.data["created"] = entry["created"]
            if hit.diff_id is not None:
                state.config.diff_ids.append(hit.diff_id)
                state.layers.append(hit.descriptor)  # type: ignore[arg-type]
            with self._lock:
                self._adopt.append((hit.key, ImageConfig(state.config.data).changed().data, hit.diff_id))
        state.key = hit.key

    def alias(self, fast_key: str, key: str) -> None:
        self.cache.put(fast_key, {"alias": key}, None, [])

    def adopt_imported(self) -> int:
        """Imported steps whose layers this build fetched (or that have none) join the local
        cache, so the next build here finds them without asking the source again."""
        n = 0
        for key, config, diff_id in self._adopt:
            rows = self.store.layer_blobs(diff_id) if diff_id else []
            if diff_id is None or rows:
                self.cache.put(key, config, diff_id, [r[0] for r in rows])
                n += 1
        return n


def _imported(f: Found) -> Hit:
    if f.layer is None:
        return Hit(f.key, history=f.history)
    return Hit(f.key, history=f.history, diff_id=f.layer.diff_id, descriptor=f.layer.descriptor)
