"""OCI image layouts (as tars) of every manifest shape the local store can
hold, written with the project's own model and archive helpers: OCI and
Docker manifests, indexes and manifest lists, nested indexes, manifests
whose bytes start with white space or a BOM, and referrers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from storage import digests, mediatypes as mt
from storage.archives.tarfiles import ArchiveWriter
from storage.model import Descriptor, Index, Platform, canonical_json, parse_manifest
from tests.tarballs import make_tar

Raw = Callable[[bytes], bytes]
WHITESPACE: Raw = lambda raw: b"\n  \t" + raw + b"\n"  # noqa: E731  valid JSON, as other tools write it
BOM: Raw = lambda raw: b"\xef\xbb\xbf" + raw  # noqa: E731
NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"


def other_platform() -> Platform:
    """A platform that is not this machine's (the second child of an index)."""
    host = Platform.host()
    return Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")


@dataclass
class Layout:
    """Blobs and the top-level index.json entries of one OCI layout."""
    blobs: dict[str, bytes] = field(default_factory=dict)
    top: list[dict] = field(default_factory=list)

    def put(self, data: bytes) -> str:
        d = digests.of_bytes(data)
        self.blobs[d] = data
        return d

    def image(self, seed: str, docker: bool = False, plat: Platform | None = None, raw: Raw = bytes,
              subject: Descriptor | None = None) -> Descriptor:
        """A one-layer image; `raw` rewrites the manifest's bytes (keeping its JSON)."""
        plat = plat or Platform.host()
        entries = [("file", f"{seed}.txt", f"layer of {seed}\n")]
        tar, layer = make_tar(entries), make_tar(entries, gzip=True)
        config = canonical_json({**plat.to_json(), "created": "2024-01-02T03:04:05Z", "config": {"Cmd": [seed]},
                                 "rootfs": {"type": "layers", "diff_ids": [digests.of_bytes(tar)]},
                                 "history": [{"created": "2024-01-02T03:04:05Z", "created_by": seed}]})
        obj = {"schemaVersion": 2,
               "mediaType": mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
               "config": {"mediaType": mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
                          "digest": self.put(config), "size": len(config)},
               "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP,
                           "digest": self.put(layer), "size": len(layer)}]}
        if subject is not None:
            obj["subject"] = subject.to_json()
        data = raw(json.dumps(obj, indent=1).encode())
        return Descriptor(obj["mediaType"], self.put(data), len(data), platform=plat)

    def index(self, children: list[Descriptor], docker: bool = False, raw: Raw = bytes,
              plat: Platform | None = None) -> Descriptor:
        media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        obj = {"schemaVersion": 2, "mediaType": media_type, "manifests": [c.to_json() for c in children]}
        data = raw(json.dumps(obj, indent=1).encode())
        return Descriptor(media_type, self.put(data), len(data), platform=plat)

    def add(self, desc: Descriptor, name: str | None = None) -> Descriptor:
        """List `desc` in index.json, with a name (`docker.io/library/x:1`) or without."""
        entry = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
        if name:
            entry["annotations"] = {NAME: name, REF: name.rsplit(":", 1)[1]}
        self.top.append(entry)
        return desc

    def push(self, client, name: str, digest: str, tag: str | None = None) -> None:
        """Push what `digest` needs (children, config, layers), then its exact
        bytes, with a tests.registry Client."""
        m = parse_manifest(self.blobs[digest], digest=digest)
        for d in m.references():
            if isinstance(m, Index):
                self.push(client, name, d.digest)
            else:
                client.push_blob(name, self.blobs[d.digest])
        r = client.put_manifest(name, tag or digest, self.blobs[digest], m.media_type)
        assert r.status == 201, (r.status, r.body)

    def write(self, path: Path) -> Path:
        with open(path, "wb") as f:
            w = ArchiveWriter(f)
            w.add_json("oci-layout", {"imageLayoutVersion": "1.0.0"})
            w.add_bytes("index.json", canonical_json({"schemaVersion": 2, "manifests": self.top}))
            for d, data in self.blobs.items():
                w.add_bytes(f"blobs/sha256/{d[7:]}", data)
            w.close()
        return path


def shape(kind: str) -> tuple[Layout, Descriptor]:
    """A layout holding one tagged `shape:1` of the given kind; returns the
    layout and the descriptor the tag names."""
    lay = Layout()
    two = lambda docker=False, raw=bytes: [  # noqa: E731
        lay.image(f"{kind}-host", docker, raw=raw), lay.image(f"{kind}-other", docker, other_platform(), raw)]
    if kind == "oci-manifest":
        top = lay.image(kind)
    elif kind == "oci-index":
        top = lay.index(two())
    elif kind == "nested-index":
        inner = lay.index(two(), plat=Platform.host())
        top = lay.index([inner, lay.image(f"{kind}-sibling", plat=other_platform())])
    elif kind == "docker-manifest":
        top = lay.image(kind, docker=True)
    elif kind == "docker-list":
        top = lay.index(two(docker=True), docker=True)
    elif kind == "whitespace-manifest":
        top = lay.image(kind, raw=WHITESPACE)
    elif kind == "bom-manifest":
        top = lay.image(kind, raw=BOM)
    elif kind == "whitespace-index":
        top = lay.index(two(raw=WHITESPACE), raw=WHITESPACE)
    elif kind == "referrers":
        # An SBOM-like image that refers to the tagged one, listed untagged.
        top = lay.image(kind)
        lay.add(lay.image(f"{kind}-sbom", subject=Descriptor(top.media_type, top.digest, top.size),
                          raw=WHITESPACE))
    else:
        raise ValueError(kind)
    lay.add(top, "docker.io/library/shape:1")
    return lay, top


SHAPES = ["oci-manifest", "oci-index", "nested-index", "docker-manifest", "docker-list",
          "whitespace-manifest", "bom-manifest", "whitespace-index", "referrers"]
