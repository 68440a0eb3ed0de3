"""Image commands on the local store: import, images, history, inspect, tag, rmi."""
from __future__ import annotations

import json
import sys

import click

from ..render import human_age, human_size, short_id, table, truncate


def _store(ctx: click.Context):
    return ctx.obj.image_store()


@click.command("images")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="Only image IDs.")
@click.pass_context
def images_cmd(ctx: click.Context, digests: bool, fmt: str, quiet: bool) -> None:
    """List images."""
    entries = _store(ctx).list()
    if quiet:
        seen: list[str] = []
        for e in entries:
            if short_id(e.image_id) not in seen:
                seen.append(short_id(e.image_id))
        click.echo("\n".join(seen) if seen else "", nl=bool(seen))
        return
    if fmt == "json":
        for e in entries:
            click.echo(json.dumps({"Repository": e.repository, "Tag": e.tag, "ID": e.image_id,
                                   "Digest": e.manifest_digest, "CreatedAt": e.created,
                                   "CreatedSince": human_age(e.created), "Size": human_size(e.size),
                                   "VirtualSize": e.size}))
        return
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    rows = [[e.repository, e.tag] + ([e.manifest_digest] if digests else [])
            + [short_id(e.image_id), human_age(e.created), human_size(e.size)] for e in entries]
    click.echo(table(headers, rows))


@click.command("history")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-H", "--human", default=True, hidden=True)
@click.argument("image")
@click.pass_context
def history_cmd(ctx: click.Context, no_trunc: bool, fmt: str, human: bool, image: str) -> None:
    """Show the history of an image, newest first."""
    img = _store(ctx).resolve(image)
    layers = iter(img.manifest.layers)
    rows = []
    for h in img.config.history:
        layer = None if h.get("empty_layer") else next(layers, None)
        size = layer.size if layer else 0
        rows.append((h, size))
    rows.reverse()
    if fmt == "json":
        for n, (h, size) in enumerate(rows):
            click.echo(json.dumps({"ID": img.id if n == 0 else "<missing>", "CreatedAt": h.get("created"),
                                   "CreatedSince": human_age(h.get("created")),
                                   "CreatedBy": h.get("created_by", ""), "Size": size,
                                   "Comment": h.get("comment", ""), "EmptyLayer": bool(h.get("empty_layer"))}))
        return
    out = []
    for n, (h, size) in enumerate(rows):
        ident = (img.id if no_trunc else short_id(img.id)) if n == 0 else "<missing>"
        created_by = h.get("created_by", "")
        if not no_trunc:
            created_by = truncate(created_by, 45)
        out.append([ident, human_age(h.get("created")), created_by, human_size(size), h.get("comment", "")])
    click.echo(table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], out))


def image_document(store, ref: str) -> dict:
    """`inspect` of an image (soko/commands/inspect.py prints it, beside containers)."""
    img = store.resolve(ref)
    data = img.config.data
    repo_digests = sorted({t.rsplit(":", 1)[0] + "@" + img.digest for t in img.tags})
    return {
        "Id": img.id,
        "Digest": img.digest,
        "RepoTags": img.tags,
        "RepoDigests": repo_digests,
        "Created": data.get("created"),
        "Author": data.get("author", ""),
        "Architecture": data.get("architecture"),
        "Variant": data.get("variant"),
        "Os": data.get("os"),
        "Config": data.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": list(img.config.diff_ids)},
        "History": data.get("history") or [],
        "Size": img.size,
        "Manifest": {"MediaType": img.manifest.media_type,
                     "Layers": [d.to_json() for d in img.manifest.layers]},
    }


@click.command("tag")
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag_cmd(ctx: click.Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    store = _store(ctx)
    store.tag(target, store.resolve_digest(source))


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove an image with several tags by ID.")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def rmi_cmd(ctx: click.Context, force: bool, images: tuple[str, ...]) -> None:
    """Remove images (blobs are freed by `soko gc`)."""
    store = _store(ctx)
    failed = False
    for ref in images:
        try:
            for ev in store.remove(ref, force=force):
                click.echo(f"{ev.kind}: {ev.what}")
        except Exception as exc:
            from ..errors import is_known, one_line

            if not is_known(exc) or len(images) == 1:
                raise
            click.echo(f"soko: {one_line(exc)}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@click.command("import")
@click.option("-c", "--change", "changes", multiple=True, help="A Dockerfile instruction for the config.")
@click.option("-m", "--message", default=None, help="Commit message (the history comment).")
@click.argument("source")
@click.argument("name", required=False)
@click.pass_context
def import_cmd(ctx: click.Context, changes: tuple[str, ...], message: str | None, source: str,
               name: str | None) -> None:
    """Make a one-layer image from a root filesystem tarball (FILE or -)."""
    from pathlib import Path

    from storage import references
    from storage.rootfs_import import import_rootfs

    from ..changes import apply_changes

    store = _store(ctx)
    ref = references.parse(name) if name else None  # validate before the work
    cfg = apply_changes(changes)
    src = sys.stdin.buffer if source == "-" else Path(source)
    manifest = import_rootfs(store, src, cfg, message, source)
    if ref is not None:
        store.tag(ref, manifest.digest)
    click.echo(manifest.config.digest)
