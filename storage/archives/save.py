"""Writing images from the local store as a docker-archive or an OCI layout tar.

docker-archive is written in the combined form `docker save` uses since
Docker 25: an OCI layout (uncompressed layers, as Docker keeps them) plus the
classic `manifest.json` and `repositories`, so both old and new readers
(podman, skopeo, Docker) accept it. The OCI format keeps the stored blobs and
manifest bytes exactly, so digests survive the round trip.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from .. import digests, mediatypes as mt, references
from ..compression import iter_decompressed
from ..errors import DigestMismatch, InvalidReference
from ..images import Image, ImageStore
from ..model import Descriptor, build_manifest, canonical_json
from ..outfile import open_output
from .load import NAME_ANNOTATION, REF_ANNOTATION, _blob_name
from .tarfiles import ArchiveWriter

Targets = list[tuple[Image, list[str]]]  # each image once, with the tags to write for it


def _targets(store: ImageStore, refs: list[str]) -> Targets:
    """Each image once, with the tags the user named; an image named by ID
    or digest is saved without tags, as `docker save` does."""
    out: dict[str, tuple[Image, list[str]]] = {}
    for ref in refs:
        img = store.resolve(ref)
        entry = out.setdefault(img.digest, (img, []))
        try:
            r = references.parse(ref)
        except InvalidReference:
            continue
        if not r.digest and r.familiar() in img.tags and r.familiar() not in entry[1]:
            entry[1].append(r.familiar())
    return list(out.values())


def save_oci(store: ImageStore, targets: Targets, w: ArchiveWriter) -> None:
    w.add_json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    written: set[str] = set()
    manifests = []
    for img, tags in targets:
        for d in [img.manifest.config, *img.manifest.layers]:
            if d.digest not in written:
                with store.blobs.open(d.digest) as f:  # a missing blob: BlobNotFound, one line
                    w.add_file(_blob_name(d.digest), f)
                written.add(d.digest)
        if img.digest not in written:
            w.add_bytes(_blob_name(img.digest), img.manifest.raw)
            written.add(img.digest)
        base = {"mediaType": img.manifest.media_type, "digest": img.digest, "size": len(img.manifest.raw)}
        for t in tags or [None]:
            desc = dict(base)
            if t:
                r = references.parse(t)
                desc["annotations"] = {NAME_ANNOTATION: str(r), REF_ANNOTATION: r.tag}
            manifests.append(desc)
    w.add_bytes("index.json", canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                              "manifests": manifests}))


@contextmanager
def _uncompressed_layer(store: ImageStore, d: Descriptor, diff_id: str) -> Iterator[BinaryIO]:
    """The layer as an uncompressed tar, open for reading: the blob itself
    when it is stored uncompressed, else a temporary file removed after."""
    if d.digest == diff_id:
        with store.blobs.open(d.digest) as f:
            yield f
        return
    tmp = store.blobs.new_temp(".tar")
    try:
        with store.blobs.open(d.digest) as f, open(tmp, "wb") as out:
            h = digests.hasher()
            for data in iter_decompressed(f):
                h.update(data)
                out.write(data)
        if f"sha256:{h.hexdigest()}" != diff_id:
            raise DigestMismatch(diff_id, f"sha256:{h.hexdigest()}", f"layer {d.digest} diff_id")
        with open(tmp, "rb") as f:
            yield f
    finally:
        tmp.unlink(missing_ok=True)


def save_docker(store: ImageStore, targets: Targets, w: ArchiveWriter) -> None:
    w.add_json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    written: set[str] = set()
    entries, manifests, repositories = [], [], {}
    for img, tags in targets:
        cfg = img.manifest.config
        if cfg.digest not in written:
            with store.blobs.open(cfg.digest) as f:
                w.add_file(_blob_name(cfg.digest), f)
            written.add(cfg.digest)
        layer_descs = []
        for d, diff_id in zip(img.manifest.layers, img.config.diff_ids):
            with _uncompressed_layer(store, d, diff_id) as f:
                if diff_id not in written:
                    w.add_file(_blob_name(diff_id), f)
                    written.add(diff_id)
                layer_descs.append(Descriptor(mt.OCI_LAYER, diff_id, os.fstat(f.fileno()).st_size))
        m = build_manifest(Descriptor(mt.OCI_CONFIG, cfg.digest, cfg.size), layer_descs)
        if m.digest not in written:
            w.add_bytes(_blob_name(m.digest), m.raw)
            written.add(m.digest)
        for t in tags or [None]:
            desc = {"mediaType": mt.OCI_MANIFEST, "digest": m.digest, "size": len(m.raw)}
            if t:
                r = references.parse(t)
                desc["annotations"] = {NAME_ANNOTATION: str(r), REF_ANNOTATION: r.tag}
                repositories.setdefault(r.familiar_name, {})[r.tag] = img.config.diff_ids[-1].split(":")[1] \
                    if img.config.diff_ids else ""
            manifests.append(desc)
        entries.append({"Config": _blob_name(cfg.digest), "RepoTags": tags,
                        "Layers": [_blob_name(d) for d in img.config.diff_ids]})
    w.add_bytes("index.json", canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                              "manifests": manifests}))
    w.add_bytes("manifest.json", json.dumps(entries, separators=(",", ":")).encode())
    if repositories:
        w.add_json("repositories", repositories)


def save(store: ImageStore, refs: list[str], dest: str | Path | BinaryIO, fmt: str = "docker") -> None:
    """Write the images `refs` name to `dest` (a path, see `open_output`, or a
    stream such as stdout). Every name is resolved before a byte is written;
    a failure leaves a file `dest` as it was, and a stream without the end of
    the archive, so no reader takes it for a whole one."""
    targets = _targets(store, refs)
    with open_output(dest) as out:
        w = ArchiveWriter(out)
        try:
            (save_oci if fmt == "oci" else save_docker)(store, targets, w)
        except BaseException:
            w.abort()
            raise
        w.close()
