"""Images as Docker shows them: `inspect`'s object, `images` rows and `history` rows.

Key names, key order and value formats follow Docker Engine 20.10 (`docker image inspect`,
the CLI's image and history formatter contexts). What soko knows beyond Docker's keys
(manifest digest and media type, layer descriptors, the config's history) sits under
inspect's one key of its own, `Soko`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .formatter import FormatRow
from .gotemplate import NIL_MAP, NIL_SLICE, GoStruct
from .render import (go_time_string, human_age, human_size, local_rfc3339, rfc3339_nano, short_id,
                     timestamp_rfc3339_nano, truncate)

# container.Config of Docker 20.10, in its field order: (key, zero value, omitempty)
_CONFIG_FIELDS: list[tuple[str, Any, bool]] = [
    ("Hostname", "", False), ("Domainname", "", False), ("User", "", False),
    ("AttachStdin", False, False), ("AttachStdout", False, False), ("AttachStderr", False, False),
    ("ExposedPorts", NIL_MAP, True), ("Tty", False, False), ("OpenStdin", False, False),
    ("StdinOnce", False, False), ("Env", NIL_SLICE, False), ("Cmd", NIL_SLICE, False),
    ("Healthcheck", None, True), ("ArgsEscaped", False, True), ("Image", "", False),
    ("Volumes", NIL_MAP, False), ("WorkingDir", "", False), ("Entrypoint", NIL_SLICE, False),
    ("NetworkDisabled", False, True), ("MacAddress", "", True), ("OnBuild", NIL_SLICE, False),
    ("Labels", NIL_MAP, False), ("StopSignal", "", True), ("StopTimeout", None, True),
    ("Shell", NIL_SLICE, True),
]

IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                 "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
                 "VirtualSize": "SIZE"}
HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_DIGEST_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_RAW_TABLE = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
QUIET = "{{.ID}}"


def docker_config(raw: dict | None, keep_none: bool = False) -> GoStruct | None:
    """An image's container config with every key Docker shows, in Docker's order."""
    if raw is None and keep_none:
        return None
    raw = raw or {}
    out: dict[str, Any] = {}
    omitted: dict[str, Any] = {}
    for key, zero, omitempty in _CONFIG_FIELDS:
        value = raw.get(key)
        if omitempty and not value:
            omitted[key] = zero if value is None else value
            continue
        out[key] = zero if value is None else value
    return GoStruct(out, omitted)


def inspect_image(store, img, snapshots_root: Path | None = None) -> dict:
    """`docker image inspect`'s object for one image (values may be TypedNil: see plain())."""
    from storage import image_facts as facts

    data = img.config.data
    tags = sorted(set(facts.image_tags(store, img.id)) | set(img.tags))
    sizes = facts.layer_sizes(store, img)
    out: dict[str, Any] = {
        "Id": img.id,
        "RepoTags": tags,
        "RepoDigests": facts.repo_digests(store, img.id),
        "Parent": "",
        "Comment": data.get("comment") or _last_history_comment(data),
        "Created": rfc3339_nano(data.get("created")),
        "Container": data.get("container", ""),
        "ContainerConfig": docker_config(data.get("container_config")),
        "DockerVersion": data.get("docker_version", ""),
        "Author": data.get("author", ""),
        "Config": docker_config(data.get("config"), keep_none=True),
        "Architecture": data.get("architecture", ""),
    }
    omitted = {}
    for key, field_ in (("Variant", "variant"), ("Os", "os"), ("OsVersion", "os.version")):
        if data.get(field_) or key == "Os":
            out[key] = data.get(field_) or ""
        else:
            omitted[key] = ""
    out["Size"] = sum(sizes)
    out["VirtualSize"] = sum(sizes)
    out["GraphDriver"] = graph_driver(img, snapshots_root or Path(store.root) / "snapshots")
    out["RootFS"] = {"Type": "layers", "Layers": list(img.config.diff_ids)}
    out["Metadata"] = {"LastTagTime": timestamp_rfc3339_nano(facts.last_tag_time(store, img.id))}
    out = GoStruct(out, omitted)
    out["Soko"] = {
        "Digest": img.digest,
        "MediaType": img.manifest.media_type,
        "Layers": [d.to_json() for d in img.manifest.layers],
        "History": data.get("history") or [],
    }
    return out


def _last_history_comment(data: dict) -> str:
    """Docker's fallback for an image whose config has no comment: its last history entry's."""
    history = data.get("history") or []
    return (history[-1].get("comment") or "") if history and isinstance(history[-1], dict) else ""


def graph_driver(img, snapshots: Path) -> dict:
    """Where the layers unpack: the top layer's snapshot is UpperDir, the others LowerDir."""
    from runtime.snapshots import chain_ids

    dirs = [str(snapshots / c.split(":", 1)[1]) for c in chain_ids(img.config.diff_ids)]
    data: dict[str, str] = {}
    if len(dirs) > 1:
        data["LowerDir"] = ":".join(reversed(dirs[:-1]))
    if dirs:
        data["UpperDir"] = dirs[-1]
    name = os.environ.get("SOKO_SNAPSHOTTER") or ("overlay" if overlay_available() else "copy")
    return {"Data": data, "Name": "copy" if name == "copy" else "overlay"}


def overlay_available() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


# -- images ---------------------------------------------------------------------------------------
def image_row(repository: str, tag: str, digest: str, image_id: str, created: str | None, size: int,
              no_trunc: bool) -> FormatRow:
    return FormatRow({
        "Containers": "N/A",
        "CreatedAt": go_time_string(created),
        "CreatedSince": human_age(created),
        "Digest": digest,
        "ID": image_id if no_trunc else short_id(image_id),
        "Repository": repository,
        "SharedSize": "N/A",
        "Size": human_size(size),
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(size, 4),
    }, "*formatter.imageContext")


# -- history --------------------------------------------------------------------------------------
def history_rows(store, img, no_trunc: bool, human: bool) -> list[FormatRow]:
    """Newest first; each layer step with the unpacked bytes it added, as `docker history` shows."""
    from storage import image_facts as facts

    sizes = iter(facts.layer_sizes(store, img))
    entries = []
    for h in img.config.data.get("history") or []:
        size = 0 if h.get("empty_layer") else next(sizes, 0)
        entries.append((h, size))
    entries.reverse()
    rows = []
    for n, (h, size) in enumerate(entries):
        ident = (img.id if no_trunc else short_id(img.id)) if n == 0 else "<missing>"
        created_by = h.get("created_by", "").replace("\t", " ")
        created_at = local_rfc3339(h.get("created"))
        rows.append(FormatRow({
            "Comment": h.get("comment", ""),
            "CreatedAt": created_at,
            "CreatedBy": created_by if no_trunc else truncate(created_by, 45),
            "CreatedSince": human_age(h.get("created")) if human else created_at,
            "ID": ident,
            "Size": human_size(size) if human else str(size),
        }, "*image.historyContext"))
    return rows
