"""`soko gc`: free what nothing references."""
from __future__ import annotations

import click

from ..render import human_size


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--grace", type=float, default=None, hidden=True,
              help="Keep unreferenced blobs younger than this many seconds (default 3600).")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: float | None) -> None:
    """Delete blobs and cache entries that nothing references."""
    from storage import gc

    store = ctx.obj.image_store()
    report = gc.collect(store, dry_run=dry_run, grace=gc.DEFAULT_GRACE if grace is None else grace)
    verb = "Would remove" if dry_run else "Removed"
    for d in report.removed:
        click.echo(f"{verb}: {d}")
    click.echo(f"{verb} {len(report.removed)} blobs ({human_size(report.freed)}), kept {report.kept}")
