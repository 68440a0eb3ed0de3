"""`soko save` and `soko load`."""
from __future__ import annotations

import sys

import click


@click.command("save")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to FILE (- or none: stdout, unless it is a terminal).")
@click.option("--format", "fmt", type=click.Choice(["docker", "oci"]), default="docker",
              help="docker-archive (as `docker save`) or an OCI layout tar.")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def save_cmd(ctx: click.Context, output: str | None, fmt: str, images: tuple[str, ...]) -> None:
    """Save images to a tar archive."""
    from storage.archives import save

    from ..errors import SokoError

    if output in (None, "-"):
        if sys.stdout.isatty():
            raise SokoError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        save(ctx.obj.image_store(), list(images), sys.stdout.buffer, fmt)
    else:
        save(ctx.obj.image_store(), list(images), output, fmt)


@click.command("load")
@click.option("-i", "--input", "source", default=None, type=click.Path(dir_okay=False, exists=True, allow_dash=True),
              help="Read from FILE (docker-archive or OCI layout tar, plain, gzip or zstd; - or none: stdin).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing about what was loaded.")
@click.pass_context
def load_cmd(ctx: click.Context, source: str | None, quiet: bool) -> None:
    """Load images from a tar archive."""
    from storage.archives import load

    from ..errors import SokoError

    if source in (None, "-"):
        if sys.stdin.isatty():
            raise SokoError("requested load from stdin, but stdin is empty")
        loaded = load(ctx.obj.image_store(), sys.stdin.buffer)
    else:
        loaded = load(ctx.obj.image_store(), source)
    for item in loaded:
        if quiet:
            continue
        if item.tags:
            for t in item.tags:
                click.echo(f"Loaded image: {t}")
        else:
            click.echo(f"Loaded image ID: {item.image_id}")
