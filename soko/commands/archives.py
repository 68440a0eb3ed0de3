"""`soko save` and `soko load`."""
from __future__ import annotations

import click


@click.command("save")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Write to FILE.")
@click.option("--format", "fmt", type=click.Choice(["docker", "oci"]), default="docker",
              help="docker-archive (as `docker save`) or an OCI layout tar.")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def save_cmd(ctx: click.Context, output: str, fmt: str, images: tuple[str, ...]) -> None:
    """Save images to a tar archive."""
    from storage.archives import save

    save(ctx.obj.image_store(), list(images), output, fmt)


@click.command("load")
@click.option("-i", "--input", "source", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Read from FILE (docker-archive or OCI layout tar, plain, gzip or zstd).")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def load_cmd(ctx: click.Context, source: str, quiet: bool) -> None:
    """Load images from a tar archive."""
    from storage.archives import load

    for item in load(ctx.obj.image_store(), source):
        if quiet:
            continue
        if item.tags:
            for t in item.tags:
                click.echo(f"Loaded image: {t}")
        else:
            click.echo(f"Loaded image ID: {item.image_id}")
