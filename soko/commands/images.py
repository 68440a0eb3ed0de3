"""Image commands on the local store: import, images, history, inspect, tag, rmi."""
from __future__ import annotations

import sys

import click


def _store(ctx: click.Context):
    return ctx.obj.image_store()


class GoBool(click.ParamType):
    """A boolean as Go's flag package takes it, `-H=false` included."""
    name = "boolean"

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            return value
        text = str(value).lstrip("=").strip().lower()
        if text in ("1", "t", "true", "yes", "y", "on"):
            return True
        if text in ("0", "f", "false", "no", "n", "off"):
            return False
        self.fail(f"{value!r} is not a valid boolean", param, ctx)


FORMAT_HELP = ("Go template (`{{.ID}}`, `{{json .}}`, `table {{.Repository}}\\t{{.Tag}}`), "
               "`table`, or `json`.")


@click.command("images")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Show all images (soko keeps no intermediate images: the same rows).")
@click.option("--digests", is_flag=True, help="Show the repo digests (those pushed or pulled with).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE.")
@click.option("--format", "fmt", default=None, help=FORMAT_HELP)
@click.option("--no-trunc", is_flag=True, help="Do not truncate the image IDs.")
@click.option("-q", "--quiet", is_flag=True, help="Only image IDs.")
@click.argument("reference", required=False)
@click.pass_context
def images_cmd(ctx: click.Context, all_: bool, digests: bool, filters: tuple[str, ...], fmt: str | None,
               no_trunc: bool, quiet: bool, reference: str | None) -> None:
    """List images (REFERENCE: only those whose REPOSITORY[:TAG] matches)."""
    from ..formatter import render
    from ..image_list import Filters, image_rows
    from ..image_views import IMAGE_HEADERS, IMAGES_DIGEST_TABLE, IMAGES_TABLE, QUIET

    parsed = Filters.parse(list(filters) + ([f"reference={reference}"] if reference else []))
    rows = image_rows(_store(ctx), parsed, no_trunc)
    if quiet and fmt in (None, "table"):
        fmt = QUIET
    default = IMAGES_DIGEST_TABLE if digests else IMAGES_TABLE
    if fmt and fmt.startswith("table") and digests and "{{.Digest}}" not in fmt:
        fmt = fmt.replace("{{.Tag}}", "{{.Tag}}\t{{.Digest}}", 1)  # as Docker's NewImageFormat
    click.echo(render(fmt, rows, IMAGE_HEADERS, default), nl=False)


@click.command("history")
@click.option("--format", "fmt", default=None, help=FORMAT_HELP)
@click.option("-H", "--human", type=GoBool(), default=True, show_default=True,
              help="Sizes and dates in human-readable form (-H=false: bytes and RFC 3339 times).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.option("-q", "--quiet", is_flag=True, help="Only image IDs.")
@click.argument("image")
@click.pass_context
def history_cmd(ctx: click.Context, fmt: str | None, human: bool, no_trunc: bool, quiet: bool,
                image: str) -> None:
    """Show the history of an image, newest first."""
    from ..formatter import render
    from ..image_views import HISTORY_HEADERS, HISTORY_RAW_TABLE, HISTORY_TABLE, QUIET, history_rows

    store = _store(ctx)
    rows = history_rows(store, store.resolve(image), no_trunc, human)
    if quiet and fmt in (None, "table"):
        fmt = QUIET
    click.echo(render(fmt, rows, HISTORY_HEADERS, HISTORY_TABLE if human else HISTORY_RAW_TABLE), nl=False)




@click.command("tag")
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag_cmd(ctx: click.Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    from storage import references
    from storage.errors import InvalidReference

    from ..errors import SokoError

    try:
        ref = references.parse(target)
    except InvalidReference as e:
        raise SokoError(f'Error parsing reference: "{target}" is not a valid repository/tag: {e}') from None
    if ref.digest:
        raise SokoError(f"refusing to create a tag with a digest reference: {target}")
    store = _store(ctx)
    store.tag(ref, store.resolve_digest(source))


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove an image with several tags by ID.")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def rmi_cmd(ctx: click.Context, force: bool, images: tuple[str, ...]) -> None:
    """Remove images: `Untagged:` per reference, `Deleted:` per image ID (blobs are freed by `soko gc`)."""
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
