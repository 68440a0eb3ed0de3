"""Loading docker-archives and OCI layout tars into the local store.

The format is told by content: `manifest.json` is a docker-archive (the
combined form that `docker save` writes since Docker 25 also has
`index.json`; its OCI manifests are then kept with their exact bytes). Every
blob is verified as it is copied; on any failure the blobs this load added
are removed, no tag is written, and the store is as it was.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import digests, mediatypes as mt, references
from ..errors import ArchiveError, InvalidReference, ManifestError, StorageError
from ..images import ImageStore
from ..model import Descriptor, ImageConfig, Index, Manifest, Platform, build_manifest, parse_manifest
from .ingest import Ingest
from .tarfiles import members, open_archive, read_json, read_small

NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass
class Loaded:
    digest: str  # manifest (or index) digest
    image_id: str
    tags: list[str] = field(default_factory=list)


def load(store: ImageStore, source: str | Path | BinaryIO) -> list[Loaded]:
    """Load every image of the archive `source` (a path, or a stream such as
    stdin, seekable or not) and tag it as the archive says."""
    if not hasattr(source, "read"):
        source = Path(source)  # type: ignore[arg-type]
    path = source if isinstance(source, Path) else "stdin"
    ingest = Ingest(store.blobs)
    try:
        with open_archive(source, store.blobs, str(path)) as tar:  # type: ignore[arg-type]
            index = members(tar)
            if "manifest.json" in index:
                loaded = _load_docker(store, tar, index, ingest)
            elif "index.json" in index:
                loaded = _load_oci(store, tar, index, ingest)
            else:
                raise ArchiveError(f"{path}: neither a docker-archive nor an OCI layout "
                                   "(no manifest.json or index.json)")
        for item in loaded:
            for t in item.tags:
                store.tag(t, item.digest)
        return loaded
    except BaseException:
        ingest.rollback()
        raise


# -- docker-archive ---------------------------------------------------------
def _load_docker(store: ImageStore, tar: tarfile.TarFile, index: dict, ingest: Ingest) -> list[Loaded]:
    entries = read_json(tar, index, "manifest.json", "docker-archive")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError("docker-archive: manifest.json must be a non-empty list")
    oci_manifests = _oci_manifests_by_config(tar, index) if "index.json" in index else {}
    out = []
    for n, entry in enumerate(entries):
        where = f"docker-archive: manifest.json[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ArchiveError(f"{where}: needs Config and Layers")
        raw_config = _member_bytes(tar, index, entry["Config"], where)
        config = ImageConfig.parse(raw_config)
        if len(config.diff_ids) != len(entry["Layers"]):
            raise ArchiveError(f"{where}: {len(entry['Layers'])} layers but the config lists "
                               f"{len(config.diff_ids)} diff_ids")
        config_digest = ingest.put_bytes(raw_config)
        layers = []
        for layer_path, diff_id in zip(entry["Layers"], config.diff_ids):
            m = index.get(_norm(layer_path))
            if m is None:
                raise ArchiveError(f"{where}: layer {layer_path} is missing from the archive")
            blob, _, kind, size = ingest.put_layer(tar.extractfile(m), diff_id=diff_id)
            layers.append(Descriptor(mt.LAYER_BY_COMPRESSION["oci"][kind], blob, size))
        kept = oci_manifests.get(config_digest)
        if kept is not None and [d.digest for d in kept.layers] == [d.digest for d in layers]:
            ingest.put_bytes(kept.raw, kept.digest)
            manifest = store.add_manifest(kept.raw, kept.media_type)
        else:
            m = build_manifest(Descriptor(mt.OCI_CONFIG, config_digest, len(raw_config)), layers)
            ingest.put_bytes(m.raw, m.digest)
            manifest = store.add_manifest(m.raw)
        tags = [_tag_name(t) for t in entry.get("RepoTags") or [] if isinstance(t, str)]
        out.append(Loaded(manifest.digest, config_digest, [t for t in tags if t]))
    return out


def _oci_manifests_by_config(tar, index) -> dict[str, Manifest]:
    """The combined (Docker 25+) form: OCI manifests in blobs/, by config digest."""
    found: dict[str, Manifest] = {}
    try:
        idx = read_json(tar, index, "index.json", "OCI layout")
        for d in idx.get("manifests", []):
            raw = _blob_bytes(tar, index, Descriptor.from_json(d), "OCI layout")
            m = parse_manifest(raw, digest=digests.of_bytes(raw))
            if isinstance(m, Manifest):
                found[m.config.digest] = m
    except (StorageError, KeyError, TypeError, AttributeError):
        return {}
    return found


# -- OCI layout -------------------------------------------------------------
def _load_oci(store: ImageStore, tar: tarfile.TarFile, index: dict, ingest: Ingest) -> list[Loaded]:
    layout = read_json(tar, index, "oci-layout", "OCI layout") if "oci-layout" in index else None
    if layout is not None and not isinstance(layout, dict):
        raise ArchiveError("OCI layout: oci-layout is not a JSON object")
    top = read_json(tar, index, "index.json", "OCI layout")
    if not isinstance(top, dict) or not isinstance(top.get("manifests"), list):
        raise ArchiveError("OCI layout: index.json has no manifests list")
    out = []
    for n, obj in enumerate(top["manifests"]):
        try:
            desc = Descriptor.from_json(obj, f"index.json manifests[{n}]")
        except ManifestError as e:
            raise ArchiveError(f"OCI layout: {e}") from None
        digest, image_id = _load_oci_manifest(store, tar, index, ingest, desc)
        ann = desc.annotations or {}
        name = ann.get(NAME_ANNOTATION) or ann.get(REF_ANNOTATION) or ""
        tag = _tag_name(name) if (":" in name or "/" in name) else None
        out.append(Loaded(digest, image_id, [tag] if tag else []))
    return out


def _load_oci_manifest(store, tar, index, ingest: Ingest, desc: Descriptor) -> tuple[str, str]:
    raw = _blob_bytes(tar, index, desc, "OCI layout")
    if digests.of_bytes(raw, digests.parse(desc.digest).algorithm) != desc.digest:
        raise ArchiveError(f"OCI layout: manifest blob {desc.digest} does not match its digest")
    m = parse_manifest(raw, desc.media_type, desc.digest)
    if isinstance(m, Index):
        children = [c for c in m.manifests if _norm(_blob_name(c.digest)) in index]
        if not children:
            raise ArchiveError(f"OCI layout: index {m.digest} has none of its manifests in the archive")
        ids = [_load_oci_manifest(store, tar, index, ingest, c)[1] for c in children]
        ingest.put_bytes(raw, m.digest)
        store.add_index(raw, m.media_type)
        try:
            image_id = ids[children.index(m.select(Platform.host()))]
        except (ManifestError, ValueError):
            image_id = ids[0]
        return m.digest, image_id
    config_raw = _blob_bytes(tar, index, m.config, "OCI layout")
    ingest.put_bytes(config_raw, m.config.digest)
    config = ImageConfig.parse(config_raw)
    layer_descs = [d for d in m.layers if mt.is_layer(d.media_type)]
    if len(layer_descs) != len(config.diff_ids):
        raise ArchiveError(f"OCI layout: manifest {m.digest} has {len(layer_descs)} layers, config lists "
                           f"{len(config.diff_ids)} diff_ids")
    for d, diff_id in zip(layer_descs, config.diff_ids):
        member = _blob_member(index, d, "OCI layout: layer")
        ingest.put_layer(tar.extractfile(member), expected=d.digest, diff_id=diff_id)
    ingest.put_bytes(raw, m.digest)
    store.add_manifest(raw, m.media_type)
    return m.digest, m.config.digest


# -- helpers ----------------------------------------------------------------
def _norm(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _blob_name(digest: str) -> str:
    d = digests.parse(digest)
    return f"blobs/{d.algorithm}/{d.encoded}"


def _blob_member(index, d: Descriptor, what: str) -> tarfile.TarInfo:
    """The member holding `d`'s blob, refused (before a byte of it is read)
    unless its size is the one the descriptor declares."""
    try:
        name = _blob_name(d.digest)
    except StorageError as e:
        raise ArchiveError(f"{what}: {e}") from None
    m = index.get(name)
    if m is None:
        raise ArchiveError(f"{what}: {name} is missing from the archive")
    if m.size != d.size:
        raise ArchiveError(f"{what}: blob {d.digest} is {m.size} bytes, its descriptor says size {d.size}")
    return m


def _blob_bytes(tar, index, d: Descriptor, what: str) -> bytes:
    return read_small(tar, _blob_member(index, d, what), what)


def _member_bytes(tar, index, name: str, what: str) -> bytes:
    m = index.get(_norm(name))
    if m is None:
        raise ArchiveError(f"{what}: {name} is missing from the archive")
    return read_small(tar, m, what)


def _tag_name(text: str) -> str | None:
    try:
        return references.parse(text).familiar()
    except InvalidReference:
        return None
