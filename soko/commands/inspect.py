"""`soko inspect`: containers and images as JSON (or through -f TEMPLATE), as `docker inspect`.

A name is looked up as a container first, then as an image (`--type` picks one).
"""
from __future__ import annotations

import json
import sys

import click

from ..errors import is_known, one_line


def _documents(ctx: click.Context, names: tuple[str, ...], kind: str | None, fmt: str | None) -> None:
    from runtime.errors import NoSuchContainer

    from .. import templates
    from ..containerview import inspect as container_document
    from .containers import get
    from .images import image_document

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
                doc = image_document(store, name)
            docs.append(doc)
        except Exception as exc:
            if ctx.obj.debug or not is_known(exc):
                raise
            click.echo(f"soko: {one_line(exc)}", err=True)
            failed = True
    if fmt:
        for d in docs:
            click.echo(templates.render(fmt, d))
    else:
        click.echo(json.dumps(docs, indent=4))
    if failed:
        sys.exit(1)


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="json or a Go template ({{.State.Status}}).")
@click.option("--type", "kind", type=click.Choice(["container", "image"]), default=None)
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx: click.Context, fmt: str | None, kind: str | None, names: tuple[str, ...]) -> None:
    """Show details of containers or images as JSON."""
    _documents(ctx, names, kind, fmt)


@click.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="json or a Go template ({{.State.Status}}).")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def container_inspect_cmd(ctx: click.Context, fmt: str | None, names: tuple[str, ...]) -> None:
    """Show details of containers as JSON."""
    _documents(ctx, names, "container", fmt)
