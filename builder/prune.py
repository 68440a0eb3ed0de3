"""`soko builder prune` and the builder's share of `soko gc`: what the builder keeps, let go.

The builder keeps three things in the store: step results (`builder_cache`,
holding their layers), cache-mount directories (cachemounts.py) and
downloads of `ADD <url>` (remote.py). Without `all`, only what nothing else
needs goes: every cache mount and download, and the step results whose
layer no tagged image uses (Docker's "dangling" build cache). With
`all`, every step result goes too. `older_than` keeps what was used more
recently. Layers released here are freed by `soko gc`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .cache import BuildCache
from .cachemounts import CacheMounts


@dataclass
class Pruned:
    ids: list[str] = field(default_factory=list)   # what went: step keys, cache mount names, URLs
    reclaimed: int = 0                             # bytes freed now (cache mounts, downloads)


def prune(store, all_: bool = False, older_than: float | None = None) -> Pruned:
    from . import remote

    out = Pruned()
    cutoff = time.time() - older_than if older_than is not None else float("inf")
    cache = BuildCache(store)
    used = set() if all_ else _image_layers(store)
    for key, diff_id, last_used in cache.entries():
        if last_used >= cutoff:
            continue
        if all_ or (diff_id is not None and diff_id not in used):
            cache.drop(key)
            out.ids.append(key)
    for m in CacheMounts(store).prune(older_than):
        out.ids.append(m.name)
        out.reclaimed += m.size
    for url, size in remote.prune_urls(store, older_than):
        out.ids.append(url)
        out.reclaimed += size
    return out


def _image_layers(store) -> set[str]:
    layers: set[str] = set()
    for (digest,) in store.db.query("SELECT DISTINCT manifest_digest FROM tags"):
        try:
            layers.update(store.image(digest).config.diff_ids)
        except Exception:  # a damaged image keeps nothing alive; gc reports it
            continue
    return layers
