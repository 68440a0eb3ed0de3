"""`--cache-to`: the steps of this build as an OCI artifact, in a registry or a local OCI layout.

mode=min: the final image's steps (the target stage and the stages it is
FROM); mode=max: every stage this build ran. Each step's history entry and
layer are read from its stage's final config, so an importer that hits every
step builds the very image this build made. Layers a --cache-from hit left
remote are not downloaded to be exported: a registry destination gets them
from where they are (mounted on the same registry, else streamed across).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage import digests
from storage import mediatypes as mt
from storage.errors import StorageError
from storage.model import canonical_json

from .cacheformat import ARTIFACT_TYPE, CacheDoc, Layer, Record, encode
from .cacheimport import Imports, LocalSource, RegistrySource
from .cachespec import CacheSpec
from .errors import BuildError, CacheExportError


def collect(exe, target: int, mode: str) -> CacheDoc:
    """The records of the stages `mode` exports, from the executor's trail."""
    states = exe.states()
    stages = [target]
    while stages[-1] in exe.bases:
        stages.append(exe.bases[stages[-1]])
    if mode == "max":
        stages += [i for i in states if i not in stages]
    doc = CacheDoc(mode=mode)
    for s in reversed(stages):  # bases first: the graph reads in build order
        final = states[s]
        for t in exe.trail.get(s, []):
            layer = None
            if t.layer is not None:
                layer = Layer(final.config.diff_ids[t.layer], final.layers[t.layer])
            entry = dict(final.config.history[t.history]) if t.history is not None else None
            doc.add(Record("step", t.key, t.parent, entry, layer))
            if t.link_key is not None and layer is not None:
                doc.add(Record("link", t.link_key, layer=layer))
            if t.fast_key is not None:
                doc.add(Record("alias", t.fast_key, target=t.key))
    return doc


def export(store, spec: CacheSpec, doc: CacheDoc, imports: Imports | None) -> None:
    manifest, config = encode(doc)
    layers = {r.layer.descriptor.digest: r.layer for r in doc.records.values() if r.layer is not None}
    try:
        if spec.type == "registry":
            _to_registry(store, spec.ref, manifest, config, layers, imports)  # type: ignore[arg-type]
        else:
            _to_directory(store, Path(spec.path), manifest, config, layers, imports)  # type: ignore[arg-type]
    except BuildError as e:
        raise CacheExportError(f"--cache-to {spec}: {e}") from None
    except (StorageError, OSError) as e:
        raise CacheExportError(f"--cache-to {spec}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the registry client's errors
        from registry.errors import RegistryError

        if isinstance(e, RegistryError):
            raise CacheExportError(f"--cache-to {spec}: {e}") from None
        raise


def _to_registry(store, ref: str, manifest, config: bytes, layers: dict[str, Layer], imports: Imports | None) -> None:
    from registry.client import artifact

    places: dict[str, artifact.BlobPlace] = {manifest.config.digest: store.blobs.local_path(store.blobs.put_bytes(config))}
    for digest, layer in layers.items():
        if store.blobs.has(digest):
            places[digest] = store.blobs.local_path(digest)
            continue
        src = imports.source_of(layer.diff_id) if imports is not None else None
        if isinstance(src, RegistrySource):
            places[digest] = artifact.InRepository(src.ref)
        elif isinstance(src, LocalSource):
            places[digest] = src.blob(digest)
        else:
            raise BuildError(f"layer {layer.diff_id} is neither stored nor imported")
    artifact.push(ref, manifest, places)


def _to_directory(store, root: Path, manifest, config: bytes, layers: dict[str, Layer],
                  imports: Imports | None) -> None:
    """An OCI image layout: blobs/, oci-layout, and index.json naming the cache manifest
    (replacing the cache an earlier export left there; its blobs stay)."""
    missing = [x.diff_id for d, x in layers.items() if not store.blobs.has(d)]
    if missing and imports is not None:
        imports.need(missing)
    root.mkdir(parents=True, exist_ok=True)
    _put(root, manifest.config.digest, data=config)
    for digest in layers:
        _put(root, digest, src=store.blobs.local_path(digest))
    _put(root, manifest.digest, data=manifest.raw)
    _write(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    desc = {"mediaType": mt.OCI_MANIFEST, "digest": manifest.digest, "size": len(manifest.raw),
            "artifactType": ARTIFACT_TYPE, "annotations": {"org.opencontainers.image.ref.name": "cache"}}
    _write(root / "index.json", canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                                "manifests": [desc]}))


def _put(root: Path, digest: str, data: bytes | None = None, src: Path | None = None) -> None:
    d = digests.parse(digest)
    dest = root / "blobs" / d.algorithm / d.encoded
    if dest.is_file() and dest.stat().st_size == (len(data) if data is not None else src.stat().st_size):  # type: ignore[union-attr]
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{d.encoded}.tmp{os.getpid()}")
    if data is not None:
        tmp.write_bytes(data)
    else:
        try:
            os.link(src, tmp)  # type: ignore[arg-type]
        except OSError:
            shutil.copyfile(src, tmp)  # type: ignore[arg-type]
    os.replace(tmp, dest)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
