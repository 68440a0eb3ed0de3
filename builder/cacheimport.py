"""`--cache-from`: steps found in an exported cache or a plain image, layers fetched only when needed.

A build asks `lookup(key)` when its own cache misses; an exported cache
(registry or local, cacheformat.py) answers by key. A plain image has no
keys: it is followed step by step (`Cursor`) from a base it shares with the
build, and a RUN step is taken from it only when everything below is known
to be the same (builder/CACHE.md, "Plain images").

A hit puts the step's history entry and layer *descriptor* into the stage;
the blob is fetched by `need(diff_ids)`, which the steps that touch a
filesystem (RUN, COPY, WORKDIR, a --from view) and the final commit call.
A layer no later step needs is never downloaded.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from storage import digests
from storage import mediatypes as mt
from storage.errors import StorageError
from storage.model import Descriptor, ImageConfig, Manifest, parse_manifest

from .cacheformat import CacheDoc, Layer, Record, decode
from .cachespec import CacheSpec
from .errors import BuildError, CacheError


class Source:
    """Where imported layers come from."""
    label = ""

    def fetch(self, store, layers: list[Layer]) -> None:
        raise NotImplementedError


class RegistrySource(Source):
    def __init__(self, ref: str, options):
        self.label = ref
        self.ref = ref
        self.options = options

    def fetch(self, store, layers: list[Layer]) -> None:
        from registry.client import artifact

        artifact.fetch_blobs(self.ref, [x.descriptor for x in layers], store.blobs, self.options)


class LocalSource(Source):
    """An OCI image layout directory (`type=local`): blobs/sha256/... and index.json."""

    def __init__(self, path: Path):
        self.label = str(path)
        self.path = path

    def blob(self, digest: str) -> Path:
        d = digests.parse(digest)
        return self.path / "blobs" / d.algorithm / d.encoded

    def read(self, d: Descriptor, limit: int = 16 << 20) -> bytes:
        p = self.blob(d.digest)
        with open(p, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit or digests.of_bytes(data, digests.parse(d.digest).algorithm) != d.digest:
            raise CacheError(f"{p} does not hold {d.digest}")
        return data

    def fetch(self, store, layers: list[Layer]) -> None:
        for x in layers:
            with open(self.blob(x.descriptor.digest), "rb") as f:
                store.blobs.put_stream(f, x.descriptor.digest, x.descriptor.size)


@dataclass
class Keyed:
    """An exported cache: records by key."""
    doc: CacheDoc
    source: Source


@dataclass
class PlainImage:
    """An image's history and layers, to follow (no keys)."""
    history: list[dict]
    layers: list[Layer]
    source: Source | None        # None: its layers are in the local store


@dataclass(frozen=True)
class Cursor:
    """Where a stage stands in a plain image it has matched so far."""
    image: PlainImage
    h: int   # its next history entry
    n: int   # its next layer

    def next(self) -> dict | None:
        return self.image.history[self.h] if self.h < len(self.image.history) else None


@dataclass
class Found:
    """An imported step: the history entry it added and its layer (not fetched yet)."""
    key: str
    history: dict | None     # None: the step adds no history entry
    layer: Layer | None


class Imports:
    def __init__(self, store, warn: Callable[[str], None]):
        self.store = store
        self.warn = warn
        self.keyed: list[Keyed] = []
        self.images: list[PlainImage] = []
        self.fetched: list[str] = []          # blob digests downloaded or copied in by this build
        self._pending: dict[str, tuple[Layer, Source]] = {}  # diff_id -> where to get it
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.keyed or self.images)

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, store, specs: list[CacheSpec], platform, warn: Callable[[str], None]) -> "Imports":
        """Each source read now (manifest and config only); one that cannot be read is a
        warning and the build goes on without it, as BuildKit does."""
        from registry.client import ClientOptions
        from registry.errors import RegistryError

        imp = cls(store, warn)
        options = ClientOptions()
        for spec in specs:
            try:
                if spec.type == "registry":
                    imp._open_registry(spec.ref, options)  # type: ignore[arg-type]
                elif spec.type == "local":
                    imp._open_local(Path(spec.path))  # type: ignore[arg-type]
                else:
                    imp._open_image(spec.ref, options, platform)  # type: ignore[arg-type]
            except (BuildError, StorageError, RegistryError, OSError, ValueError) as e:
                warn(f"--cache-from {spec}: {_reason(e)}; building without it")
        return imp

    def _open_registry(self, ref: str, options) -> None:
        from registry.client import artifact

        f = artifact.fetch(ref, options)
        self.keyed.append(Keyed(decode(f.manifest, f.config, ref), RegistrySource(f.reference, options)))

    def _open_local(self, path: Path) -> None:
        src = LocalSource(path)
        index = json.loads((path / "index.json").read_bytes())
        from .cacheformat import ARTIFACT_TYPE, CONFIG_TYPE

        for d in (Descriptor.from_json(x) for x in index.get("manifests") or []):
            if d.artifact_type not in (None, ARTIFACT_TYPE) or d.media_type != mt.OCI_MANIFEST:
                continue
            m = parse_manifest(src.read(d), d.media_type, digest=d.digest)
            if isinstance(m, Manifest) and m.config.media_type == CONFIG_TYPE:
                self.keyed.append(Keyed(decode(m, src.read(m.config), str(path)), src))
                return
        raise CacheError(f"{path}/index.json names no soko build cache")

    def _open_image(self, ref: str, options, platform) -> None:
        try:
            image = self.store.resolve(ref, platform)
        except StorageError:
            image = None
        if image is not None:
            manifest, config, source = image.manifest, image.config, None
        else:
            from registry.client import artifact

            f = artifact.fetch(ref, options, platform)
            manifest, config = f.manifest, ImageConfig.parse(f.config)
            source = RegistrySource(f.reference, options)
        descs = [d for d in manifest.layers if mt.is_layer(d.media_type)]
        if len(descs) != len(config.diff_ids):
            raise CacheError(f"{ref}: its config and manifest disagree on the layers")
        layers = [Layer(diff, d) for diff, d in zip(config.diff_ids, descs)]
        self.images.append(PlainImage(list(config.history), layers, source))

    # -- exported caches: by key ---------------------------------------------------------------
    def record(self, key: str) -> tuple[Record, Source] | None:
        for k in self.keyed:
            r = k.doc.records.get(key)
            if r is not None:
                return r, k.source
        return None

    def lookup(self, key: str) -> Found | None:
        """The step `key` (an alias followed to its step) from an exported cache."""
        got = self.record(key)
        if got is not None and got[0].kind == "alias":
            got = self.record(got[0].target)  # type: ignore[arg-type]
        if got is None or got[0].kind != "step":
            return None
        r, src = got
        if r.layer is not None:
            self._offer(r.layer, src)
        return Found(r.key, dict(r.history) if r.history is not None else None, r.layer)

    def link_layer(self, link_key: str) -> Layer | None:
        got = self.record(link_key)
        if got is None or got[0].kind != "link":
            return None
        self._offer(got[0].layer, got[1])  # type: ignore[arg-type]
        return got[0].layer

    # -- plain images: followed --------------------------------------------------------------
    def cursors(self, history: list[dict], diff_ids: list[str]) -> list[Cursor]:
        """Plain images that start with this base (the same history and layers)."""
        out = []
        for img in self.images:
            if img.history[:len(history)] == history and [x.diff_id for x in img.layers[:len(diff_ids)]] == diff_ids:
                out.append(Cursor(img, len(history), len(diff_ids)))
        return out

    def follow(self, cursors: list[Cursor], key: str, created_by: str, run: bool) -> Found | None:
        """The next step of a followed image, when it is this metadata step (`run` False)
        or this RUN (whose history text says all of its inputs)."""
        for c in cursors:
            entry = c.next()
            if entry is None:
                continue
            empty = bool(entry.get("empty_layer"))
            want = created_by if empty else created_by + " # buildkit"
            if entry.get("created_by") != want or (not run and not empty):
                continue
            layer = None if empty else c.image.layers[c.n] if c.n < len(c.image.layers) else None
            if not empty and layer is None:
                continue
            if layer is not None and c.image.source is not None:
                self._offer(layer, c.image.source)
            return Found(key, dict(entry), layer)
        return None

    @staticmethod
    def advance(cursors: list[Cursor], entry: dict, diff_id: str | None) -> list[Cursor]:
        """The cursors whose image made the same step (same history text, same layer)."""
        out = []
        for c in cursors:
            nxt = c.next()
            if nxt is None or nxt.get("created_by") != entry.get("created_by") \
                    or bool(nxt.get("empty_layer")) != bool(entry.get("empty_layer")):
                continue
            if diff_id is not None:
                if c.n >= len(c.image.layers) or c.image.layers[c.n].diff_id != diff_id:
                    continue
                out.append(Cursor(c.image, c.h + 1, c.n + 1))
            else:
                out.append(Cursor(c.image, c.h + 1, c.n))
        return out

    # -- layers, fetched when needed ---------------------------------------------------------
    def _offer(self, layer: Layer, source: Source) -> None:
        with self._lock:
            self._pending.setdefault(layer.diff_id, (layer, source))

    def source_of(self, diff_id: str) -> Source | None:
        """Where an imported layer comes from (None: not imported)."""
        got = self._pending.get(diff_id)
        return got[1] if got else None

    def need(self, diff_ids: list[str]) -> None:
        """Make sure these layers' blobs are in the store: fetch the imported ones missing."""
        todo = [d for d in diff_ids if d in self._pending and not self.store.layer_blobs(d)]
        if not todo:
            return
        with self._lock:
            by_source: dict[int, tuple[Source, list[Layer]]] = {}
            for d in todo:
                if self.store.layer_blobs(d):
                    continue
                layer, src = self._pending[d]
                by_source.setdefault(id(src), (src, []))[1].append(layer)
            for src, layers in by_source.values():
                try:
                    src.fetch(self.store, layers)
                except Exception as e:  # noqa: BLE001 - registry, storage and OS errors alike
                    raise BuildError(f"fetching cached layers from {src.label}: {_reason(e)}") from None
                for x in layers:
                    self._record(x)

    def _record(self, x: Layer) -> None:
        """Check the blob holds the layer it is said to, then tell the store what it is."""
        from storage import compression as comp

        d = x.descriptor
        with self.store.blobs.open(d.digest) as raw:
            kind = comp.detect(raw.read(8))
            raw.seek(0)
            reader = digests.DigestingReader(comp.open_reader(raw, kind))
            while reader.read(1 << 20):
                pass
        if reader.digest != x.diff_id:
            self.store.blobs.delete(d.digest)
            raise BuildError(f"cached layer {d.digest} does not hold {x.diff_id}; not used")
        self.store.record_layer(x.diff_id, d.digest, kind, d.size)
        self.fetched.append(d.digest)


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__
