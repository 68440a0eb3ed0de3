"""The exported build cache: an OCI artifact (manifest + config), described in builder/CACHE.md.

The manifest's layers are the cached layer blobs, as stored; its config (of
media type CONFIG_TYPE) is the document below, which maps step keys to what
the steps added:

    {"schemaVersion": 1, "keyVersion": "soko-build-cache-v2", "mode": "max",
     "diffIDs": ["sha256:...", ...],                 # one per manifest layer, in order
     "records": [
       {"kind": "step", "key": K, "parent": P, "history": {...}, "layer": 0},
       {"kind": "step", "key": K2, "parent": K, "history": {...}, "layer": null},
       {"kind": "link", "key": L, "layer": 1},      # COPY --link: the layer alone, by content
       {"kind": "alias", "key": F, "target": K}]}   # COPY --from: looked up first, names the step key
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from storage import digests
from storage import mediatypes as mt
from storage.errors import StorageError
from storage.model import Descriptor, Manifest, canonical_json, parse_manifest

from .cache import KEY_VERSION
from .errors import CacheError

ARTIFACT_TYPE = "application/vnd.soko.build-cache.v1"
CONFIG_TYPE = "application/vnd.soko.build-cache.config.v1+json"
SCHEMA = 1
KINDS = ("step", "link", "alias")


@dataclass
class Layer:
    """A layer of an exported cache: its diff ID and where its blob is."""
    diff_id: str
    descriptor: Descriptor   # the blob, as stored where the cache is


@dataclass
class Record:
    """One step of an exported cache: how it is found and what it added."""
    kind: str                      # step | link | alias
    key: str
    parent: str | None = None      # step: the key before it (the graph)
    history: dict | None = None    # step: the history entry it added (None: it adds none, as ONBUILD)
    layer: Layer | None = None     # step (when it made one) and link
    target: str | None = None      # alias: the step key it stands for


@dataclass
class CacheDoc:
    """An exported cache's step graph (builder/CACHE.md)."""
    records: dict[str, Record] = field(default_factory=dict)
    mode: str = "min"

    def add(self, r: Record) -> None:
        self.records.setdefault(r.key, r)


def encode(doc: CacheDoc) -> tuple[Manifest, bytes]:
    """The artifact's manifest and config bytes; layers once each, in first-use order."""
    layers: list[Layer] = []
    index: dict[str, int] = {}
    out = []
    for r in doc.records.values():
        rec: dict = {"kind": r.kind, "key": r.key}
        if r.layer is not None:
            if r.layer.descriptor.digest not in index:
                index[r.layer.descriptor.digest] = len(layers)
                layers.append(r.layer)
            rec["layer"] = index[r.layer.descriptor.digest]
        if r.kind == "step":
            rec.update(parent=r.parent, history=r.history, layer=rec.get("layer"))
        if r.kind == "alias":
            rec["target"] = r.target
        out.append(rec)
    config = canonical_json({"schemaVersion": SCHEMA, "keyVersion": KEY_VERSION, "mode": doc.mode,
                             "diffIDs": [x.diff_id for x in layers], "records": out})
    cdesc = Descriptor(CONFIG_TYPE, digests.of_bytes(config), len(config))
    obj = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
           "config": cdesc.to_json(), "layers": [x.descriptor.to_json() for x in layers]}
    raw = canonical_json(obj)
    return parse_manifest(raw, mt.OCI_MANIFEST), config


def decode(manifest: Manifest, config: bytes, where: str) -> CacheDoc:
    """A cache document fetched from `where`; CacheError when it is not one soko can use."""
    def bad(why: str) -> CacheError:
        return CacheError(f"{where} is not a usable soko build cache: {why}")

    if manifest.config.media_type != CONFIG_TYPE:
        raise bad(f"its config is {manifest.config.media_type}, not {CONFIG_TYPE}")
    try:
        obj = json.loads(config)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"config is not JSON ({e})") from None
    if not isinstance(obj, dict) or obj.get("schemaVersion") != SCHEMA:
        raise bad(f"schemaVersion {obj.get('schemaVersion') if isinstance(obj, dict) else None!r} "
                  f"is not {SCHEMA}")
    doc = CacheDoc(mode=str(obj.get("mode", "min")))
    if obj.get("keyVersion") != KEY_VERSION:
        return doc  # keys of another format: nothing can match, nothing is wrong
    diff_ids = obj.get("diffIDs")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise bad("diffIDs do not match the manifest's layers")
    try:
        layers = [Layer(str(digests.parse(d)), desc) for d, desc in zip(diff_ids, manifest.layers)]
    except (StorageError, TypeError, AttributeError) as e:
        raise bad(f"a diffID is not a digest ({e})") from None
    records = obj.get("records")
    if not isinstance(records, list):
        raise bad("records is not a list")
    for i, rec in enumerate(records):
        try:
            doc.add(_record(rec, layers))
        except (KeyError, TypeError, ValueError, IndexError, StorageError) as e:
            raise bad(f"records[{i}]: {e}") from None
    return doc


def _record(rec: dict, layers: list[Layer]) -> Record:
    kind = rec["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    key = str(digests.parse(rec["key"]))
    layer = None
    if rec.get("layer") is not None:
        i = rec["layer"]
        if not isinstance(i, int) or not 0 <= i < len(layers):
            raise IndexError(f"layer {i!r} out of range")
        layer = layers[i]
    if kind == "alias":
        return Record(kind, key, target=str(digests.parse(rec["target"])))
    if kind == "link":
        if layer is None:
            raise ValueError("a link record without a layer")
        return Record(kind, key, layer=layer)
    history = rec["history"]
    if history is None:  # a step that adds no history entry (ONBUILD)
        if layer is not None:
            raise ValueError("a layer without a history entry")
    elif not isinstance(history, dict) or not isinstance(history.get("created_by", ""), str):
        raise ValueError("history is not a history entry")
    elif bool(history.get("empty_layer")) != (layer is None):
        raise ValueError("history's empty_layer disagrees with the layer")
    parent = rec.get("parent")
    return Record(kind, key, parent=str(digests.parse(parent)) if parent else None, history=history, layer=layer)
