"""`soko commit`: a container's changes as a new image (its image plus one layer).

The layer is written from the container's upper directory (its change in
overlay form, runtime.Container.changes); the config is the image's, with the
container's own settings (Cmd, Entrypoint, Env, WorkingDir, User, Labels,
ExposedPorts, StopSignal, Healthcheck) and the `-c` instructions on top, and
a history entry for the new layer. The container is frozen meanwhile unless
`--pause=false`, as Docker does.
"""
from __future__ import annotations

import datetime as dt

import click

# Container Config keys an image config keeps (the rest describes one container, not an image)
IMAGE_KEYS = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "WorkingDir", "Entrypoint", "Volumes",
              "OnBuild", "Labels", "StopSignal")


@click.command("commit")
@click.option("-a", "--author", default="", help="Author (e.g. \"Jane Doe <jane@example.com>\").")
@click.option("-c", "--change", "changes", multiple=True, help="A Dockerfile instruction for the config.")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-p", "--pause", type=click.BOOL, default=True, help="Freeze the container meanwhile (default true).")
@click.argument("container")
@click.argument("repository", required=False)
@click.pass_context
def commit_cmd(ctx, author, changes, message, pause, container, repository) -> None:
    """Create a new image from a container's changes."""
    from storage import mediatypes as mt, references
    from storage.layers import write_layer_from_overlay
    from storage.model import Descriptor, ImageConfig

    from ..changes import apply_changes
    from .containers import get

    ref = references.parse(repository) if repository else None  # validate before the work
    extra = apply_changes(changes)
    c = get(ctx, container)
    store = c.store
    base = store.image(c.record.config.get("ManifestDigest") or store.resolve_digest(c.record.image))
    docker = base.manifest.media_type == mt.DOCKER_MANIFEST
    with c.paused(pause), c.changes() as (upper, _lowers):
        info = write_layer_from_overlay(upper, store.blobs, compression="gzip",
                                        media_types="docker" if docker else "oci")
    store.record_layer(info.diff_id, info.digest, info.compression, info.size)
    cfg = ImageConfig.parse(base.config.to_bytes())
    cfg.raw = None
    data = cfg.data
    cont = c.record.config.get("Config") or {}
    new = {k: cont[k] for k in IMAGE_KEYS if cont.get(k) not in (None, {}, [])}
    new.update(extra)
    data["config"] = new
    now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    data["created"] = now
    if author:
        data["author"] = author
    data.pop("comment", None)  # as docker commit: the image's comment is this commit's message, or none
    if message:
        data["comment"] = message
    cfg.diff_ids.append(info.diff_id)
    entry = {"created": now, "created_by": " ".join(cont.get("Cmd") or [])}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    cfg.history.append(entry)
    layers = [d for d in base.manifest.layers if mt.is_layer(d.media_type)]
    layers.append(Descriptor(info.media_type, info.digest, info.size))
    manifest = store.commit(cfg, layers, base.manifest.media_type)
    if ref is not None:
        store.tag(ref, manifest.digest)
    click.echo(manifest.config.digest)
