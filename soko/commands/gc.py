"""`soko gc`: free what nothing references, in the local store or (with
--registry) in a registry root, safely while `soko serve` runs on it."""
from __future__ import annotations

import click

from ..render import human_size


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--grace", type=float, default=3600.0, show_default=True,
              help="Keep unreferenced blobs younger than this many seconds (writes in flight).")
@click.option("--registry", "registry_root", default=None, type=click.Path(file_okay=False),
              help="Collect a registry root instead (default with the flag alone: <store root>/registry).",
              is_flag=False, flag_value="")
@click.option("--untagged", is_flag=True, help="With --registry: also delete manifests no tag refers to.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="With --registry: the `soko serve` config whose retention and immutable rules apply "
                   "(and whose root is the default).")
@click.option("--metadata", default=None, metavar="URL",
              help="With --registry: the registry's metadata is in this PostgreSQL database "
                   "(postgresql://USER@HOST:PORT/DB; or [metadata] in --config).")
@click.option("--cache-max-age", type=float, default=7 * 86400.0, show_default=True,
              help="Forget build cache entries, cache mounts and downloads unused for this many seconds (0: all).")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: float, registry_root: str | None, untagged: bool,
           config_file: str | None, metadata: str | None, cache_max_age: float) -> None:
    """Delete blobs, snapshots and cache entries that nothing references."""
    verb = "Would remove" if dry_run else "Removed"
    if (config_file or metadata) and registry_root is None:
        raise click.UsageError(f"{'--config' if config_file else '--metadata'} goes with --registry")
    if registry_root is not None:
        from registry.server import gc as registry_gc

        root = registry_root or str(ctx.obj.root / "registry")
        retention, immutable, storage = [], [], None
        if config_file:
            from registry.server import ServerConfig

            cfg = ServerConfig.from_file(config_file, defaults={"root": root},
                                         **({"root": registry_root} if registry_root else {}))
            root, retention, immutable, storage = cfg.root, cfg.retention, cfg.immutable, cfg.storage
            metadata = metadata or cfg.metadata.url
        r = registry_gc.collect(root, dry_run=dry_run, grace=grace, untagged=untagged, retention=retention,
                                immutable=immutable, storage=storage, metadata=metadata)
        if r.skipped:
            click.echo("Another process is collecting this registry right now: nothing done")
            return
        for repo, tag in r.tags_expired:
            click.echo(f"{verb} tag (retention): {repo}:{tag}")
        click.echo(f"{verb} {len(r.blobs_removed)} blobs ({human_size(r.bytes_freed)}), "
                   f"{len(r.manifests_removed)} manifests, {len(r.tags_expired)} tags by retention, "
                   f"{r.uploads_removed} stale uploads; kept {r.blobs_kept} blobs")
        return
    from builder.cache import BuildCache
    from builder.cachemounts import CacheMounts
    from builder.remote import prune_urls
    from storage import gc

    store = ctx.obj.image_store()
    dropped = 0
    if not dry_run:  # the build cache first: it releases the layers and downloads it holds
        dropped = BuildCache(store).prune(cache_max_age)
        dropped += len(CacheMounts(store).prune(cache_max_age)) + len(prune_urls(store, cache_max_age))
    report = gc.collect(store, dry_run=dry_run, grace=grace)
    from runtime import snapshots

    pruned = snapshots.prune(store, dry_run=dry_run)  # after the blobs: dropped images free theirs
    for d in report.removed:
        click.echo(f"{verb}: {d}")
    click.echo(f"{verb} {len(report.removed)} blobs ({human_size(report.freed)}), kept {report.kept}; "
               f"{len(pruned)} snapshots, {dropped} build cache entries")
