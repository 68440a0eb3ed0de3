"""The local image store: blobs plus facts, under one root directory.

Layout: `blobs/` and `ingest/` (the blob store, an OCI layout's blob tree),
`oci-layout`, and `metadata.db`. An image is a manifest whose config and
layers are all present; its ID is the config digest, as in Docker. Tags map
normalized references to a manifest (or index) digest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from . import mediatypes as mt, references
from .blobs import BlobStore
from .errors import BlobNotFound, ImageNotFound, InvalidReference, ManifestError, StorageError
from .metadata import MetadataDB
from .model import Descriptor, ImageConfig, Index, Manifest, Platform, build_manifest, parse_manifest
from .private import open_root


@dataclass
class Image:
    """A stored image: its manifest, its config and the tags that name it."""
    manifest: Manifest
    config: ImageConfig
    tags: list[str] = field(default_factory=list)  # familiar `name:tag`

    @property
    def id(self) -> str:
        return self.manifest.config.digest

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def size(self) -> int:
        return sum(d.size for d in self.manifest.layers) + self.manifest.config.size


@dataclass
class ImageSummary:
    """One row of `soko images`."""
    repository: str  # familiar name, or "<none>"
    tag: str
    manifest_digest: str
    image_id: str
    created: str | None
    size: int


@dataclass
class RemoveEvent:
    """What `rmi` did to one name or image (Docker's Untagged/Deleted lines)."""
    kind: str  # "Untagged" or "Deleted"
    what: str


def _familiar(name: str | None) -> str:
    return references.parse(name, default_tag=None).familiar_name if name else "<none>"


class ImageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        open_root(self.root)  # private: layers hold setuid files and device nodes
        self.blobs = BlobStore(self.root)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion":"1.0.0"}')
        self.db = MetadataDB(self.root / "metadata.db")

    # -- adding ------------------------------------------------------------
    def put_json_blob(self, data: bytes, expected: str | None = None) -> str:
        return self.blobs.put_bytes(data, expected)

    def add_manifest(self, raw: bytes, media_type: str | None = None) -> Manifest:
        """Register a manifest whose config and layers are already stored."""
        m = parse_manifest(raw, media_type)
        if isinstance(m, Index):
            raise ManifestError("expected an image manifest, got an index")
        for d in m.references():
            if not self.blobs.has(d.digest):
                raise ManifestError(f"manifest {m.digest} refers to missing blob {d.digest}")
            if self.blobs.size(d.digest) != d.size:
                raise ManifestError(f"blob {d.digest} has size {self.blobs.size(d.digest)}, "
                                    f"manifest says {d.size}")
        config = ImageConfig.parse(self.blobs.read_bytes(m.config.digest))
        layers = [d for d in m.layers if mt.is_layer(d.media_type)]
        if len(config.diff_ids) != len(layers):
            raise ManifestError(f"manifest has {len(layers)} layers but config lists "
                                f"{len(config.diff_ids)} diff_ids")
        self.blobs.put_bytes(raw, m.digest)
        with self.db.transaction() as c:
            c.execute("INSERT OR IGNORE INTO images(manifest_digest, config_digest, media_type, size, created, added)"
                      " VALUES(?,?,?,?,?,?)",
                      (m.digest, m.config.digest, m.media_type, sum(d.size for d in m.layers),
                       config.data.get("created"), time.time()))
            for diff_id, d in zip(config.diff_ids, layers):
                comp = mt.layer_compression(d.media_type) or "gzip"
                c.execute("INSERT OR IGNORE INTO layers(diff_id, blob_digest, compression, size) VALUES(?,?,?,?)",
                          (diff_id, d.digest, comp, d.size))
        return m

    def add_index(self, raw: bytes, media_type: str | None = None) -> Index:
        """Register an index whose child manifests are stored (children
        absent locally are allowed: a pull keeps only the platform it needs)."""
        idx = parse_manifest(raw, media_type)
        if not isinstance(idx, Index):
            raise ManifestError("expected an index, got an image manifest")
        self.blobs.put_bytes(raw, idx.digest)
        self.db.execute("INSERT OR IGNORE INTO indexes(index_digest, media_type, added) VALUES(?,?,?)",
                        (idx.digest, idx.media_type, time.time()))
        return idx

    def commit(self, config: ImageConfig, layers: list[Descriptor], media_type: str = mt.OCI_MANIFEST,
               annotations: dict[str, str] | None = None) -> Manifest:
        """Store a config soko made plus its (already stored) layers as a new image."""
        raw_config = config.to_bytes()
        config_type = mt.DOCKER_CONFIG if media_type == mt.DOCKER_MANIFEST else mt.OCI_CONFIG
        config_digest = self.blobs.put_bytes(raw_config)
        m = build_manifest(Descriptor(config_type, config_digest, len(raw_config)), layers, media_type, annotations)
        return self.add_manifest(m.raw, media_type)

    def record_layer(self, diff_id: str, blob_digest: str, compression: str, size: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO layers(diff_id, blob_digest, compression, size) VALUES(?,?,?,?)",
                        (diff_id, blob_digest, compression, size))

    def layer_blobs(self, diff_id: str) -> list[tuple[str, str, int]]:
        """Stored blobs holding the layer `diff_id`: (digest, compression, size), first recorded first."""
        rows = self.db.query("SELECT blob_digest, compression, size FROM layers WHERE diff_id=? ORDER BY rowid",
                             (diff_id,))
        return [(r[0], r[1], r[2]) for r in rows if self.blobs.has(r[0])]

    def layer_alternates(self, *blob_sets: Iterable[str]) -> list[set[str]]:
        """Each of `blob_sets` with every recorded blob holding the same layer as one
        of its blobs (its uncompressed and compressed forms): one read of the table."""
        by_layer: dict[str, list[str]] = {}
        for diff_id, blob in self.db.query("SELECT diff_id, blob_digest FROM layers"):
            by_layer.setdefault(diff_id, []).append(blob)
        forms = {blob: blobs for blobs in by_layer.values() if len(blobs) > 1 for blob in blobs}
        out = []
        for blobs in blob_sets:
            wanted = set(blobs)
            out.append(wanted.union(*(forms[b] for b in wanted if b in forms)))
        return out

    def diff_id_of(self, blob_digest: str) -> str | None:
        row = self.db.one("SELECT diff_id FROM layers WHERE blob_digest=?", (blob_digest,))
        return row[0] if row else None

    def record_source(self, blob_digest: str, registry: str, repository: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO layer_sources(blob_digest, registry, repository) VALUES(?,?,?)",
                        (blob_digest, registry, repository))

    def sources(self, blob_digest: str, registry: str) -> list[str]:
        """Repositories on `registry` known to hold the blob (for cross-repo mount)."""
        return [r[0] for r in self.db.query(
            "SELECT repository FROM layer_sources WHERE blob_digest=? AND registry=?", (blob_digest, registry))]

    def hold(self, owner: str, digest_list: Iterable[str]) -> None:
        with self.db.transaction() as c:
            c.executemany("INSERT OR IGNORE INTO holds(owner, digest) VALUES(?,?)",
                          [(owner, d) for d in digest_list])

    def release(self, owner: str) -> None:
        self.db.execute("DELETE FROM holds WHERE owner=?", (owner,))

    # -- tags ----------------------------------------------------------------
    def tag(self, ref: str | references.Reference, manifest_digest: str) -> references.Reference:
        r = references.parse(ref) if isinstance(ref, str) else ref
        if r.digest and not r.tag:
            raise InvalidReference(f"cannot tag with a digest reference: {r.familiar()}")
        is_image = self.db.one("SELECT 1 FROM images WHERE manifest_digest=?", (manifest_digest,))
        is_index = self.db.one("SELECT 1 FROM indexes WHERE index_digest=?", (manifest_digest,))
        if not (is_image or is_index):
            raise ImageNotFound(manifest_digest)
        with self.db.transaction() as c:
            c.execute("INSERT INTO tags(name, tag, manifest_digest, updated) VALUES(?,?,?,?) "
                      "ON CONFLICT(name, tag) DO UPDATE SET manifest_digest=excluded.manifest_digest, "
                      "updated=excluded.updated", (r.name, r.tag, manifest_digest, time.time()))
        return r

    def untag(self, ref: str | references.Reference) -> bool:
        r = references.parse(ref) if isinstance(ref, str) else ref
        return self.db.execute("DELETE FROM tags WHERE name=? AND tag=?", (r.name, r.tag)) > 0

    def tags_of(self, manifest_digest: str) -> list[str]:
        rows = self.db.query("SELECT name, tag FROM tags WHERE manifest_digest=? ORDER BY name, tag",
                             (manifest_digest,))
        return [references.parse(f"{r[0]}:{r[1]}").familiar() for r in rows]

    # -- reading -------------------------------------------------------------
    def manifest(self, digest: str) -> Manifest | Index:
        try:
            return parse_manifest(self.blobs.read_bytes(digest), digest=digest)
        except BlobNotFound:
            raise ImageNotFound(digest) from None

    def recorded(self, indexes_only: bool = False) -> Iterator[Manifest | Index]:
        """Every manifest and index the metadata records (and whose blob is
        stored), parsed from its exact bytes."""
        sql = "SELECT index_digest, media_type FROM indexes"
        if not indexes_only:
            sql += " UNION SELECT manifest_digest, media_type FROM images"
        for digest, media_type in self.db.query(sql):
            try:
                yield parse_manifest(self.blobs.read_bytes(digest), media_type, digest)
            except StorageError:
                continue  # gone or damaged: nothing to follow

    def image(self, manifest_digest: str, platform: Platform | None = None) -> Image:
        """The image `manifest_digest` names; an index (nested ones too)
        gives its child for `platform`, by default this machine's."""
        m = self.manifest(manifest_digest)
        while isinstance(m, Index):  # content addressing rules out a cycle
            m = self.manifest(m.select(platform or Platform.host()).digest)
        config = ImageConfig.parse(self.blobs.read_bytes(m.config.digest))
        return Image(m, config, self.tags_of(m.digest) or self.tags_of(manifest_digest))

    def resolve_digest(self, text: str) -> str:
        """The manifest (or index) digest that `text` names: a reference, a
        manifest digest, an image ID, or a unique prefix of an image ID."""
        hexpart = text[7:] if text.startswith("sha256:") else text
        if all(ch in "0123456789abcdef" for ch in hexpart) and len(hexpart) >= 4:
            rows = self.db.query("SELECT manifest_digest, config_digest FROM images "
                                 "WHERE config_digest LIKE ? OR manifest_digest LIKE ?",
                                 (f"sha256:{hexpart}%", f"sha256:{hexpart}%"))
            rows += self.db.query("SELECT index_digest, index_digest FROM indexes WHERE index_digest LIKE ?",
                                  (f"sha256:{hexpart}%",))
            ids = {r[1] for r in rows}
            if len(ids) > 1:
                raise StorageError(f"ambiguous image ID prefix {text!r}")
            if rows:
                tagged = [r[0] for r in rows if self.db.one("SELECT 1 FROM tags WHERE manifest_digest=?", (r[0],))]
                return (tagged or [r[0] for r in rows])[0]
        try:
            r = references.parse(text)
        except InvalidReference:
            if len(hexpart) == 64 or text.startswith("sha256:"):
                raise ImageNotFound(text) from None
            raise
        if r.digest:
            if self.db.one("SELECT 1 FROM images WHERE manifest_digest=? UNION "
                           "SELECT 1 FROM indexes WHERE index_digest=?", (r.digest, r.digest)):
                return r.digest
            raise ImageNotFound(text)
        row = self.db.one("SELECT manifest_digest FROM tags WHERE name=? AND tag=?", (r.name, r.tag))
        if row is None:
            raise ImageNotFound(text)
        return row[0]

    def resolve(self, text: str, platform: Platform | None = None) -> Image:
        return self.image(self.resolve_digest(text), platform)

    def _index_children(self) -> dict[str, list[str]]:
        """Each recorded index -> the digests it lists (manifests, nested indexes)."""
        return {idx.digest: [d.digest for d in idx.manifests] for idx in self.recorded(indexes_only=True)}

    def _platform_facts(self, index_digest: str) -> tuple[str | None, int]:
        """(created, size) of an index's image for this machine, as Docker shows them."""
        try:
            img = self.image(index_digest)
            return img.config.data.get("created"), img.size
        except StorageError:
            return None, self.blobs.size(index_digest) if self.blobs.has(index_digest) else 0

    def list(self) -> list[ImageSummary]:
        """`docker images`: a row per tag and a `<none>` row per untagged image,
        newest first; an untagged manifest of an image ID that is already listed
        (the same image loaded from another archive format) is no row of its own. The platform manifests of a recorded index are not rows
        of their own (the index is the image, as Docker lists it), nor is an
        untagged index that a tagged image was pulled through."""
        children = self._index_children()
        listed = {d for kids in children.values() for d in kids}
        tagged = {r[0] for r in self.db.query("SELECT DISTINCT manifest_digest FROM tags")}
        rows: list[tuple[tuple, ImageSummary]] = []
        found = self.db.query(
            "SELECT t.name, t.tag, i.manifest_digest, i.config_digest, i.created, i.size, i.added "
            "FROM images i LEFT JOIN tags t ON t.manifest_digest = i.manifest_digest ORDER BY i.added DESC")
        shown_ids = {r[3] for r in found if r[0] is not None}  # one image ID, one image (Docker)
        for name, tag, digest, config, created, size, added in found:
            if name is None and (digest in listed or config in shown_ids):
                continue
            shown_ids.add(config)
            rows.append(((-added, name or "", tag or ""), ImageSummary(_familiar(name), tag or "<none>", digest,
                                                                      config, created, size)))
        for name, tag, digest, added in self.db.query(
                "SELECT t.name, t.tag, x.index_digest, x.added FROM indexes x "
                "LEFT JOIN tags t ON t.manifest_digest = x.index_digest"):
            if name is None and (digest in listed or tagged.intersection(children.get(digest, ()))):
                continue
            created, size = self._platform_facts(digest)
            rows.append(((-added, name or "", tag or ""), ImageSummary(_familiar(name), tag or "<none>", digest,
                                                                      digest, created, size)))
        return [summary for _, summary in sorted(rows, key=lambda r: r[0])]

    def remove(self, text: str, force: bool = False) -> list[RemoveEvent]:
        """Docker's rmi: a tag reference untags (and deletes the image with its
        last tag); an ID deletes the image, with `force` when it has several tags.
        Docker keys images by ID: the image goes when no tag of any of its
        manifests is left, and takes its other (untagged) manifests and its
        repo digests along. Events: `Untagged: ref`, then `Deleted: <image ID>`."""
        from . import image_facts as facts

        digest = self.resolve_digest(text)
        image_id = facts.image_id_of(self, digest)
        events: list[RemoveEvent] = []
        by_name = False
        try:
            r = references.parse(text)
            by_name = not r.digest and r.familiar() in self.tags_of(digest)
        except InvalidReference:
            pass
        if by_name:
            self.untag(text)
            events.append(RemoveEvent("Untagged", references.parse(text).familiar()))
            if self.tags_of(digest) or facts.image_tags(self, image_id):
                if not self.tags_of(digest):
                    self._delete_records([digest])  # an untagged copy of a still-tagged image
                return events
        else:
            tags = sorted(set(self.tags_of(digest)) | set(facts.image_tags(self, image_id)))
            if len(tags) > 1 and not force:
                raise StorageError(f"conflict: unable to delete {text} (must be forced) - image is referenced "
                                   f"in multiple repositories ({', '.join(tags)}); use -f to remove them all")
            for m in [digest, *facts.manifests_of(self, image_id)]:
                for t in self.tags_of(m):
                    self.untag(t)
                    events.append(RemoveEvent("Untagged", t))
        ids = [image_id]
        if image_id == digest and self.db.one("SELECT 1 FROM indexes WHERE index_digest=?", (digest,)):
            try:
                ids.append(self.image(digest).id)  # repo digests also name the platform's image
            except StorageError:
                pass
        gone = sorted({rd for i in ids for rd in facts.forget_repo_digests(self, i)})
        events.extend(RemoveEvent("Untagged", rd) for rd in gone)
        records = sorted({digest, *facts.manifests_of(self, image_id)})
        if self.db.query(f"SELECT 1 FROM holds WHERE digest IN ({','.join('?' * len(records))}) LIMIT 1",
                         records):
            return events  # a container still uses it: untagged, kept as a dangling image (Docker's rmi -f)
        self._delete_records(records)
        events.append(RemoveEvent("Deleted", image_id))
        return events

    def _delete_records(self, digests: list[str]) -> None:
        children = self._index_children()
        with self.db.transaction() as c:
            for digest in digests:
                c.execute("DELETE FROM images WHERE manifest_digest=?", (digest,))
                c.execute("DELETE FROM indexes WHERE index_digest=?", (digest,))
                c.execute("DELETE FROM repo_digests WHERE manifest_digest=?", (digest,))
                self._forget_children(c, digest, children)

    @staticmethod
    def _forget_children(c, index_digest: str, children: dict[str, list[str]]) -> None:
        """A removed index takes the records of its platform manifests (and
        nested indexes) along, unless a tag or another index still names
        them; gc frees their blobs."""
        others = {k: v for k, v in children.items() if k != index_digest}
        todo = list(children.get(index_digest, ()))
        while todo:
            child = todo.pop()
            if c.execute("SELECT 1 FROM tags WHERE manifest_digest=?", (child,)).fetchone() \
                    or any(child in kids for kids in others.values()):
                continue
            c.execute("DELETE FROM images WHERE manifest_digest=?", (child,))
            c.execute("DELETE FROM indexes WHERE index_digest=?", (child,))
            todo.extend(others.pop(child, ()))

    def roots(self) -> set[str]:
        """Digests that garbage collection must keep, with all they reference:
        tagged images and indexes, and what other components hold. Untagged
        images are garbage, as `docker image prune` treats dangling images."""
        rows = self.db.query("SELECT manifest_digest FROM tags UNION SELECT digest FROM holds")
        return {r[0] for r in rows}

    def forget(self, removed: set[str]) -> None:
        """Drop the records of images and indexes whose manifests gc removed."""
        with self.db.transaction() as c:
            c.executemany("DELETE FROM images WHERE manifest_digest=?", [(d,) for d in removed])
            c.executemany("DELETE FROM indexes WHERE index_digest=?", [(d,) for d in removed])
