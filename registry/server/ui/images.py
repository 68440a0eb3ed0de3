"""What the UI shows about a manifest: a summary for a tag row (compressed
size, platforms) and the whole story for the image page (config, layers with
the history line that made each, referrers).

Manifests and configs are content-addressed, so summaries are cached by
digest and never go stale. Everything here reads blob files directly and runs
in a worker thread. Whatever a pushed document holds (labels, annotations,
history lines, odd types in odd places) is data: it is coerced to text and
left to the autoescaping templates.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from storage import mediatypes as mt
from storage.content import Blocking
from storage.errors import ManifestError, StorageError
from storage.model import Descriptor, Index, Manifest, Platform, parse_manifest

from ..meta import Referrer, RegistryMeta

MAX_CONFIG = 8 * 1024 * 1024  # bigger configs are not shown
ATTESTATION = "vnd.docker.reference.type"  # BuildKit's annotation on attestation manifests in an index


@dataclass(frozen=True)
class Summary:
    kind: str  # image | index | artifact | unknown
    size: int  # compressed bytes: config and layers (an index: its children's, each blob once)
    platforms: tuple[str, ...]
    artifact_type: str | None = None


@dataclass(frozen=True)
class Layer:
    digest: str | None  # None: a history step that made no layer
    media_type: str
    size: int | None
    created_by: str
    created: str
    comment: str


@dataclass(frozen=True)
class Child:
    digest: str
    media_type: str
    size: int
    platform: str
    present: bool  # in this repository
    attestation_for: str | None  # an attestation manifest describes this digest


@dataclass
class ImageView:
    repo: str
    digest: str
    media_type: str
    size: int
    manifest_json: str
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    subject: str | None = None
    children: list[Child] = field(default_factory=list)  # an index
    config_digest: str | None = None
    config_media_type: str | None = None
    config_json: str | None = None
    config_note: str | None = None  # why the config is not shown
    platform: str | None = None
    created: str = ""
    author: str = ""
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str = ""
    user: str = ""
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    layers: list[Layer] = field(default_factory=list)
    compressed: int = 0
    referrers: list[Referrer] = field(default_factory=list)
    tag_referrers: list[tuple[str, str]] = field(default_factory=list)  # (tag, digest): cosign's tag scheme
    tags: list[str] = field(default_factory=list)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else "" if v is None else json.dumps(v)


def _strings(v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, list):
        return [_text(x) for x in v]
    return [_text(v)]


def _mapping(v: Any) -> dict[str, str]:
    return {str(k): _text(x) for k, x in v.items()} if isinstance(v, dict) else {}


def _keys(v: Any) -> list[str]:
    if isinstance(v, dict):
        return sorted(str(k) for k in v)
    return _strings(v) or []


def _platform(p: Platform | None) -> str:
    return str(p) if p is not None else ""


def _load(blobs: Blocking, digest: str, media_type: str | None = None) -> Manifest | Index | None:
    try:
        return parse_manifest(blobs.read_bytes(digest), media_type, digest)
    except (OSError, StorageError, ManifestError):
        return None


def _config(blobs: Blocking, d: Descriptor) -> dict | None:
    if d.media_type not in mt.CONFIGS or d.size > MAX_CONFIG:
        return None
    try:
        data = json.loads(blobs.read_bytes(d.digest))
    except (OSError, StorageError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _config_platform(cfg: dict) -> str:
    return "/".join(_text(cfg.get(k)) for k in ("os", "architecture", "variant") if cfg.get(k))


class Summaries:
    """Tag-row summaries by manifest digest (an LRU; thread-safe)."""

    def __init__(self, blobs: Blocking, max_items: int = 8192):
        self.blobs = blobs
        self.max_items = max_items
        self._items: OrderedDict[str, Summary] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str, media_type: str) -> Summary:
        with self._lock:
            s = self._items.get(digest)
            if s is not None:
                self._items.move_to_end(digest)
                return s
        s = self._summarize(digest, media_type)
        if s.kind == "unknown":
            return s  # unreadable right now: ask again next time
        with self._lock:
            self._items[digest] = s
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return s

    def many(self, rows: list[tuple[str, str]]) -> dict[str, Summary]:
        """(digest, media type) pairs -> their summaries."""
        return {d: self.get(d, m) for d, m in rows}

    def _summarize(self, digest: str, media_type: str) -> Summary:
        m = _load(self.blobs, digest, media_type)
        if isinstance(m, Manifest):
            size = m.config.size + sum(d.size for d in m.layers)
            cfg = _config(self.blobs, m.config)
            if cfg is None:
                return Summary("artifact", size, (), m.artifact_type or m.config.media_type)
            return Summary("image", size, (_config_platform(cfg),) if _config_platform(cfg) else ())
        if isinstance(m, Index):
            platforms: list[str] = []
            blobs: dict[str, int] = {}
            for d in m.manifests:
                if (d.annotations or {}).get(ATTESTATION):
                    continue
                p = _platform(d.platform)
                if p and p not in platforms:
                    platforms.append(p)
                child = _load(self.blobs, d.digest, d.media_type)
                if isinstance(child, Manifest):
                    blobs.update({x.digest: x.size for x in (child.config, *child.layers)})
            return Summary("index", sum(blobs.values()), tuple(platforms), m.artifact_type)
        return Summary("unknown", 0, ())


def image_view(blobs: Blocking, meta: RegistryMeta, repo: str, digest: str, media_type: str, size: int) -> ImageView:
    """Everything the image page shows about one manifest of `repo`."""
    raw = blobs.read_bytes(digest)
    try:
        pretty = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        pretty = raw.decode("utf-8", "replace")
    view = ImageView(repo, digest, media_type, size, pretty)
    view.referrers = meta.referrers(repo, digest, None)
    view.tags = meta.tags_of(repo, digest)
    algo, _, hexpart = digest.partition(":")
    for suffix in ("sig", "att", "sbom"):  # cosign's referrers before the OCI 1.1 API
        row = meta.manifest_by_tag(repo, f"{algo}-{hexpart}.{suffix}")
        if row is not None:
            view.tag_referrers.append((f"{algo}-{hexpart}.{suffix}", row.digest))
    try:
        m = parse_manifest(raw, media_type, digest)
    except ManifestError as e:
        view.config_note = f"the manifest does not parse: {e}"
        return view
    view.annotations = _mapping(m.annotations)
    view.artifact_type = m.artifact_type
    view.subject = m.subject.digest if m.subject else None
    if isinstance(m, Index):
        attested: dict[str, str] = {}
        for d in m.manifests:
            ann = d.annotations or {}
            attested[d.digest] = ann.get("vnd.docker.reference.digest", "") if ann.get(ATTESTATION) else ""
            view.children.append(Child(d.digest, d.media_type, d.size, _platform(d.platform),
                                       meta.manifest_by_digest(repo, d.digest) is not None,
                                       attested[d.digest] or None))
        return view
    view.config_digest, view.config_media_type = m.config.digest, m.config.media_type
    view.compressed = m.config.size + sum(d.size for d in m.layers)
    cfg = _config(blobs, m.config)
    if cfg is None:
        view.config_note = ("an artifact: its config is not an image config"
                            if m.config.media_type not in mt.CONFIGS else "the config is missing or unreadable")
        view.layers = [Layer(d.digest, d.media_type, d.size, "", "", "") for d in m.layers]
        return view
    _fill_config(view, cfg, m.layers)
    return view


def _fill_config(view: ImageView, cfg: dict, layers: list[Descriptor]) -> None:
    view.config_json = json.dumps(cfg, indent=2, ensure_ascii=False)
    view.platform = _config_platform(cfg)
    view.created, view.author = _text(cfg.get("created")), _text(cfg.get("author"))
    rc = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    view.env = _strings(rc.get("Env")) or []
    view.entrypoint, view.cmd = _strings(rc.get("Entrypoint")), _strings(rc.get("Cmd"))
    view.workdir, view.user = _text(rc.get("WorkingDir")), _text(rc.get("User"))
    view.ports, view.volumes = _keys(rc.get("ExposedPorts")), _keys(rc.get("Volumes"))
    view.labels = _mapping(rc.get("Labels"))
    view.stop_signal = _text(rc.get("StopSignal"))
    view.layers = layer_history(cfg.get("history"), layers)


def layer_history(history: Any, layers: list[Descriptor]) -> list[Layer]:
    """History entries in order, each non-empty one paired with the next layer
    (as `docker history` pairs them); layers the history does not cover follow."""
    out: list[Layer] = []
    todo = list(layers)
    for h in history if isinstance(history, list) else []:
        if not isinstance(h, dict):
            continue
        created_by, created, comment = _text(h.get("created_by")), _text(h.get("created")), _text(h.get("comment"))
        if h.get("empty_layer") is True or not todo:
            out.append(Layer(None, "", None, created_by, created, comment))
        else:
            d = todo.pop(0)
            out.append(Layer(d.digest, d.media_type, d.size, created_by, created, comment))
    out += [Layer(d.digest, d.media_type, d.size, "", "", "") for d in todo]
    return out
