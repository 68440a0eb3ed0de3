"""`soko builder prune`: Docker's verb for the build cache (step results, cache mounts, downloads)."""
from __future__ import annotations

import click

from ..render import human_size


@click.group("builder")
def builder_group() -> None:
    """Manage the build cache."""


@builder_group.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all build cache, not just dangling entries.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="until=DURATION: only what was unused that long (24h).")
@click.pass_context
def prune_cmd(ctx: click.Context, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove build cache: cache mounts, downloads, and step results no image uses (-a: all)."""
    from builder.instructions import parse_duration

    older_than = None
    for f in filters:
        k, eq, v = f.partition("=")
        if k != "until" or not eq:
            raise click.UsageError(f"--filter {f!r}: only until=DURATION is supported")
        try:
            older_than = parse_duration(v) / 1e9
        except ValueError as e:
            raise click.UsageError(f"--filter {f!r}: {e}") from None
    if not force:
        what = "all build cache" if all_ else "all dangling build cache"
        click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?", abort=True)
    result = prune_build_cache(ctx.obj, all_, older_than)
    if result.lines:
        click.echo(f"{result.title}:")
        for line in result.lines:
            click.echo(line)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(result.reclaimed)}")


def prune_build_cache(obj, all_: bool, older_than: float | None = None):
    """The build cache's pruner, for `builder prune` and `system prune` (soko/prune.py)."""
    from builder.prune import prune

    from ..prune import PruneResult

    pruned = prune(obj.image_store(), all_, older_than)
    lines = [i.split(":", 1)[1][:25] if i.startswith("sha256:") else i for i in pruned.ids]
    return PruneResult("Deleted build cache objects", lines, pruned.reclaimed)
