"""`soko inspect`: containers and images as JSON (or through -f TEMPLATE), as `docker inspect`.

A name is looked up as a container first, then as an image (`--type` picks one).
"""
from __future__ import annotations

import sys

import click

from ..errors import is_known, one_line


def _documents(ctx: click.Context, names: tuple[str, ...], kind: str | None, fmt: str | None) -> None:
    from runtime.errors import NoSuchContainer

    from ..containerview import inspect as container_document
    from ..formatter import render_one
    from ..gotemplate import plain
    from ..image_views import inspect_image
    from .containers import get

    store = ctx.obj.image_store()
    docs = []
    failed = False
    for name in names:
        try:
            doc = None
            if kind in (None, "container"):
                try:
                    doc = container_document(get(ctx, name))
                except NoSuchContainer:
                    if kind == "container":
                        raise
            if doc is None:
                doc = inspect_image(store, store.resolve(name))
            docs.append(doc)
        except Exception as exc:
            if ctx.obj.debug or not is_known(exc):
                raise
            click.echo(f"soko: {one_line(exc)}", err=True)
            failed = True
    if fmt:
        click.echo("".join(render_one(fmt, d) for d in docs), nl=False)
    else:
        import json

        click.echo(json.dumps(plain(docs), indent=4, ensure_ascii=False))
    if failed:
        sys.exit(1)


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None,
              help="Go template over each object (`{{.Id}}`, `{{json .Config}}`, `{{.State.Status}}`).")
@click.option("--type", "kind", type=click.Choice(["container", "image"]), default=None,
              help="Only this kind of object.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx: click.Context, fmt: str | None, kind: str | None, names: tuple[str, ...]) -> None:
    """Show details of containers or images as JSON."""
    _documents(ctx, names, kind, fmt)


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Go template over each container ({{.State.Status}}).")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def container_inspect_cmd(ctx: click.Context, fmt: str | None, names: tuple[str, ...]) -> None:
    """Show details of containers as JSON."""
    _documents(ctx, names, "container", fmt)


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Go template over each image (`{{.Id}}`).")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def image_inspect_cmd(ctx: click.Context, fmt: str | None, names: tuple[str, ...]) -> None:
    """Show details of images as JSON."""
    _documents(ctx, names, "image", fmt)
