"""The image model: descriptors, manifests, indexes and image configs.

Anything received from elsewhere keeps its exact bytes (`raw`), because its
digest is the digest of those bytes. What soko creates is serialized with
`canonical_json`: sorted keys, no insignificant white space, so the same
content always gives the same digest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from . import digests, mediatypes as mt
from .errors import ManifestError

# No manifest, index or config is bigger than this: a bound before reading
# a blob or archive member whole as JSON.
MAX_JSON = 64 << 20


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ManifestError(msg)


@dataclass(frozen=True)
class Platform:
    """An OCI platform (os/architecture[/variant]) as indexes and configs give it."""
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """`os/arch[/variant]`."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(f"invalid platform {text!r} (want os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> "Platform":
        machine = os.uname().machine.lower()  # platform.machine(), without importing platform
        arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
                "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
        variant = "v7" if machine == "armv7l" else ("v8" if arch == "arm64" else None)
        return cls("linux", arch, variant)

    @classmethod
    def from_json(cls, obj: dict) -> "Platform":
        return cls(obj.get("os", ""), obj.get("architecture", ""), obj.get("variant"),
                   obj.get("os.version"))

    def to_json(self) -> dict:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out

    def matches(self, want: "Platform") -> bool:
        if self.os != want.os or self.architecture != want.architecture:
            return False
        if want.variant and self.variant and want.variant != self.variant:
            return False
        return True

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest or an index points at."""
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    urls: tuple[str, ...] | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> "Descriptor":
        _require(isinstance(obj, dict), f"{where}: not an object")
        media_type = obj.get("mediaType")
        digest = obj.get("digest")
        size = obj.get("size")
        _require(isinstance(media_type, str) and media_type, f"{where}: missing mediaType")
        _require(isinstance(digest, str), f"{where}: missing digest")
        try:
            digests.parse(digest)
        except Exception as e:
            raise ManifestError(f"{where}: {e}") from None
        _require(isinstance(size, int) and not isinstance(size, bool) and size >= 0,
                 f"{where}: size must be a non-negative integer")
        ann = obj.get("annotations")
        _require(ann is None or (isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values())),
                 f"{where}: annotations must map strings to strings")
        plat = obj.get("platform")
        _require(plat is None or isinstance(plat, dict), f"{where}: platform must be an object")
        urls = obj.get("urls")
        return cls(media_type, digest, size, ann, Platform.from_json(plat) if plat else None,
                   tuple(urls) if urls else None, obj.get("artifactType"))

    def to_json(self) -> dict:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform.to_json()
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass
class Manifest:
    """An OCI image manifest or a Docker schema2 manifest."""
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    raw: bytes
    digest: str
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def is_index(self) -> bool:
        return False

    def references(self) -> list[Descriptor]:
        """Everything this manifest needs to exist (config, layers; not subject)."""
        return [self.config, *self.layers]


@dataclass
class Index:
    """An OCI image index or a Docker manifest list."""
    media_type: str
    manifests: list[Descriptor]
    raw: bytes
    digest: str
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def is_index(self) -> bool:
        return True

    def references(self) -> list[Descriptor]:
        return list(self.manifests)

    def select(self, want: Platform) -> Descriptor:
        """The child manifest for `want` (ManifestError if none)."""
        candidates = [d for d in self.manifests if d.platform and d.platform.matches(want)]
        if not candidates:
            have = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
            raise ManifestError(f"no manifest for platform {want} (index has: {have})")
        exact = [d for d in candidates if d.platform and d.platform.variant == want.variant]
        return (exact or candidates)[0]


def detect_media_type(obj: dict) -> str | None:
    """A manifest's media type from its own fields (mediaType is optional in OCI)."""
    mt_field = obj.get("mediaType")
    if isinstance(mt_field, str) and mt_field:
        return mt_field
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "config" in obj and "layers" in obj:
        return mt.OCI_MANIFEST
    if obj.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_SIGNED
    return None


def parse_manifest(raw: bytes, media_type: str | None = None, digest: str | None = None) -> Manifest | Index:
    """Parse and validate a manifest or index, keeping its exact bytes.

    `media_type` is what the sender said (Content-Type); when given, it must
    agree with the document's own mediaType field."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from None
    except RecursionError:
        raise ManifestError("manifest is not valid JSON: nested too deeply") from None
    _require(isinstance(obj, dict), "manifest is not a JSON object")
    declared = obj.get("mediaType")
    _require(declared is None or isinstance(declared, str), "manifest mediaType must be a string")
    kind = detect_media_type(obj)
    if media_type and media_type not in ("application/json", "application/octet-stream"):
        if declared and declared != media_type:
            raise ManifestError(f"manifest mediaType {declared!r} does not match content type {media_type!r}")
        kind = media_type if kind is None or declared is None else kind
    _require(kind is not None, "cannot tell what kind of manifest this is (no mediaType, config or manifests)")
    _require(kind in mt.ALL_MANIFESTS, f"unsupported manifest media type {kind!r}")
    _require(obj.get("schemaVersion") == 2, "manifest schemaVersion must be 2")
    if digest is None:
        digest = digests.of_bytes(raw)
    ann = obj.get("annotations")
    _require(ann is None or isinstance(ann, dict), "manifest annotations must be an object")
    subject = Descriptor.from_json(obj["subject"], "subject") if obj.get("subject") is not None else None
    artifact_type = obj.get("artifactType")
    _require(artifact_type is None or isinstance(artifact_type, str), "artifactType must be a string")
    if kind in mt.INDEXES:
        children = obj.get("manifests")
        _require(isinstance(children, list), "index: manifests must be a list")
        descs = [Descriptor.from_json(d, f"manifests[{i}]") for i, d in enumerate(children)]
        return Index(kind, descs, raw, digest, ann, subject, artifact_type)
    _require("config" in obj, "manifest: missing config")
    config = Descriptor.from_json(obj["config"], "config")
    layers_obj = obj.get("layers")
    _require(isinstance(layers_obj, list), "manifest: layers must be a list")
    layers = [Descriptor.from_json(d, f"layers[{i}]") for i, d in enumerate(layers_obj)]
    if kind == mt.DOCKER_MANIFEST:
        _require(config.media_type == mt.DOCKER_CONFIG,
                 f"docker manifest: config mediaType must be {mt.DOCKER_CONFIG}")
    return Manifest(kind, config, layers, raw, digest, ann, subject, artifact_type)


def build_manifest(config: Descriptor, layers: list[Descriptor], media_type: str = mt.OCI_MANIFEST,
                   annotations: dict[str, str] | None = None) -> Manifest:
    """A manifest soko creates, serialized canonically."""
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "config": config.to_json(), "layers": [d.to_json() for d in layers]}
    if annotations:
        obj["annotations"] = annotations
    raw = canonical_json(obj)
    return Manifest(media_type, config, list(layers), raw, digests.of_bytes(raw), annotations)


def build_index(manifests: list[Descriptor], media_type: str = mt.OCI_INDEX,
                annotations: dict[str, str] | None = None) -> Index:
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "manifests": [d.to_json() for d in manifests]}
    if annotations:
        obj["annotations"] = annotations
    raw = canonical_json(obj)
    return Index(media_type, list(manifests), raw, digests.of_bytes(raw), annotations)


@dataclass
class ImageConfig:
    """An image config (OCI or Docker; the same JSON). `data` is the whole
    document so that fields soko does not model survive a round trip."""
    data: dict[str, Any]
    raw: bytes | None = None

    @classmethod
    def parse(cls, raw: bytes) -> "ImageConfig":
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"image config is not valid JSON: {e}") from None
        except RecursionError:
            raise ManifestError("image config is not valid JSON: nested too deeply") from None
        _require(isinstance(data, dict), "image config is not a JSON object")
        rootfs = data.get("rootfs")
        _require(isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list),
                 "image config: rootfs.diff_ids missing")
        for d in rootfs["diff_ids"]:
            try:
                digests.parse(d)
            except Exception as e:
                raise ManifestError(f"image config: rootfs.diff_ids: {e}") from None
        _require(data.get("config") is None or isinstance(data.get("config"), dict),
                 "image config: config must be an object")
        _require(data.get("history") is None or isinstance(data.get("history"), list),
                 "image config: history must be a list")
        return cls(data, raw)

    @classmethod
    def new(cls, plat: Platform | None = None) -> "ImageConfig":
        plat = plat or Platform.host()
        data: dict[str, Any] = {**plat.to_json(), "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
                                "history": []}
        return cls(data)

    @property
    def config(self) -> dict[str, Any]:
        """The runtime defaults (Env, Cmd, Entrypoint, ...); created when absent."""
        cfg = self.data.get("config")
        if cfg is None:
            cfg = self.data["config"] = {}
        return cfg

    @property
    def diff_ids(self) -> list[str]:
        return self.data.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", [])

    @property
    def history(self) -> list[dict[str, Any]]:
        h = self.data.get("history")
        if h is None:
            h = self.data["history"] = []
        return h

    @property
    def platform(self) -> Platform:
        return Platform(self.data.get("os", "linux"), self.data.get("architecture", "amd64"),
                        self.data.get("variant"))

    def to_bytes(self) -> bytes:
        """The exact bytes when this config was received unchanged, else canonical JSON."""
        return self.raw if self.raw is not None else canonical_json(self.data)

    def changed(self) -> "ImageConfig":
        """A mutable copy whose bytes will be re-serialized."""
        return ImageConfig(json.loads(json.dumps(self.data)))
