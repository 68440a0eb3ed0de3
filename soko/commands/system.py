"""`soko system df|prune|info` and `soko image prune` (with `image ls|inspect|history|tag|rm`,
Docker's management-command names for the top-level verbs)."""
from __future__ import annotations

from dataclasses import dataclass

import click

from ..cli import SokoGroup


@click.group("system", cls=SokoGroup)
def system_cmd() -> None:
    """Disk usage, pruning and facts about this soko."""


@dataclass
class Usage:
    kind: str
    total: int
    active: int
    size: int
    reclaimable: int


def _reclaimable(u: Usage) -> str:
    from ..render import human_size

    text = human_size(u.reclaimable, 4)
    return f"{text} ({u.reclaimable * 100 // u.size}%)" if u.size > 0 else text


def disk_usage(obj) -> tuple[list[Usage], dict]:
    """Docker's four lines (Images, Containers, Local Volumes, Build Cache) and the details for -v."""
    from storage import image_facts as facts
    from storage.errors import StorageError

    from ..store_usage import containers, tree_size, volume_names, volumes_in_use

    store = obj.image_store()
    conts = containers(obj.root)
    active_ids = {c.image for c in conts}
    images: dict[str, tuple] = {}  # image ID -> (summary, {diff_id: size})
    for e in store.list():
        if e.image_id in images:
            continue
        try:
            img = store.image(e.manifest_digest)
            layers = dict(zip(img.config.diff_ids, facts.layer_sizes(store, img)))
        except StorageError:
            layers = {}
        images[e.image_id] = (e, layers)
    all_layers = {d: s for _, layers in images.values() for d, s in layers.items()}
    used_layers = {d for iid, (_, layers) in images.items() if iid in active_ids for d in layers}
    img_size = sum(all_layers.values())
    img_usage = Usage("Images", len(images), len({i for i in images if i in active_ids}), img_size,
                      img_size - sum(all_layers[d] for d in used_layers))
    sizes = {c.id: tree_size(c.dir / "upper") if (c.dir / "upper").exists() else 0 for c in conts}
    cont_usage = Usage("Containers", len(conts), sum(c.running for c in conts), sum(sizes.values()),
                       sum(sizes[c.id] for c in conts if not c.running))
    used_vols = volumes_in_use(obj.root)
    vol_sizes = {n: tree_size(obj.root / "volumes" / n / "_data") for n in volume_names(obj.root)}
    vol_usage = Usage("Local Volumes", len(vol_sizes), sum(1 for n in vol_sizes if n in used_vols),
                      sum(vol_sizes.values()), sum(s for n, s in vol_sizes.items() if n not in used_vols))
    cache = _build_cache(store)
    cache_size = sum(all_layers.get(d) or _layer_size(store, d) for d in set(cache) if d)
    cache_usage = Usage("Build Cache", len(cache), 0, cache_size, cache_size)
    details = {"images": images, "all_layers": all_layers, "containers": conts, "sizes": sizes,
               "volumes": vol_sizes, "used_volumes": used_vols, "active_ids": active_ids}
    return [img_usage, cont_usage, vol_usage, cache_usage], details


def _build_cache(store) -> list[str | None]:
    """The diff_id of each build cache entry (None: a step that made no layer)."""
    from builder.cache import BuildCache

    BuildCache(store)  # its table exists from here on
    return [r[0] for r in store.db.query("SELECT diff_id FROM builder_cache")]


def _layer_size(store, diff_id: str) -> int:
    from storage import image_facts as facts
    from storage.errors import StorageError

    try:
        return facts.layer_size(store, diff_id)
    except StorageError:
        return 0


@system_cmd.command("df")
@click.option("-v", "--verbose", is_flag=True, help="Show the usage of each image, container and volume.")
@click.option("--format", "fmt", default=None, help="Go template over each line (`{{.Type}} {{.Size}}`), or `json`.")
@click.pass_context
def df_cmd(ctx: click.Context, verbose: bool, fmt: str | None) -> None:
    """Show how much disk images, containers, volumes and the build cache use."""
    from ..formatter import FormatRow, render
    from ..render import human_size

    usages, details = disk_usage(ctx.obj)
    rows = [FormatRow({"Type": u.kind, "TotalCount": str(u.total), "Active": str(u.active),
                       "Size": human_size(u.size, 4), "Reclaimable": _reclaimable(u)}, "*formatter.diskUsageContext")
            for u in usages]
    if not verbose:
        headers = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                   "Reclaimable": "RECLAIMABLE"}
        click.echo(render(fmt, rows, headers, "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t"
                                               "{{.Reclaimable}}"), nl=False)
        return
    click.echo(_verbose(details, usages[3]), nl=False)


def _verbose(d: dict, cache) -> str:
    from ..render import human_age, human_size, short_id, table

    shared = {}
    for _, layers in d["images"].values():
        for diff_id in layers:
            shared[diff_id] = shared.get(diff_id, 0) + 1
    rows = []
    for iid, (e, layers) in d["images"].items():
        total = sum(layers.values())
        common = sum(s for diff, s in layers.items() if shared[diff] > 1)
        uses = sum(1 for c in d["containers"] if c.image == iid)
        rows.append([e.repository, e.tag, short_id(iid), human_age(e.created), human_size(total, 4),
                     human_size(common, 4), human_size(total - common, 4), str(uses)])
    out = ["Images space usage:", "",
           table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
                 rows), "", "Containers space usage:", ""]
    import datetime as dt

    crows = []
    for c in d["containers"]:
        created = dt.datetime.fromtimestamp(c.created, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        crows.append([short_id(c.id), c.image_ref, '""', str(len(c.volumes)), human_size(d["sizes"][c.id], 4),
                      human_age(created), c.status, c.name or ""])
    out += [table(["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
                  crows), "", "Local Volumes space usage:", ""]
    vrows = [[n, str(d["used_volumes"].get(n, 0)), human_size(s, 4)] for n, s in d["volumes"].items()]
    out += [table(["VOLUME NAME", "LINKS", "SIZE"], vrows), "",
            f"Build cache usage: {human_size(cache.size, 4)}", ""]
    return "\n".join(out) + "\n"


@system_cmd.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not only dangling ones.")
@click.option("--volumes", is_flag=True, help="Remove the volumes no container uses too.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def prune_cmd(ctx: click.Context, all_: bool, volumes: bool, force: bool) -> None:
    """Remove unused data (dangling images, with -a all unused ones, with --volumes unused volumes)."""
    from ..prune import PRUNERS, confirm, report

    # each pruner of soko.prune.PRUNERS, in Docker's order: other verbs join with one line there
    flags = {"volumes": volumes}
    chosen = [p for p in PRUNERS if p.only_with is None or flags.get(p.only_with)]
    lines = "\n".join(f"  - {(p.warning_all if all_ and p.warning_all else p.warning)}" for p in chosen)
    if not confirm(f"This will remove:\n{lines}\n", force):
        return
    report([p.load()(ctx.obj, all_) for p in chosen])


@system_cmd.command("info")
@click.option("-f", "--format", "fmt", default=None, help="Go template over the facts (`{{.Driver}}`, `{{json .}}`).")
@click.pass_context
def system_info_cmd(ctx: click.Context, fmt: str | None) -> None:
    """Facts about this soko and its store (as `soko info`)."""
    from .about import info_cmd

    ctx.invoke(info_cmd, fmt=fmt)


@click.group("image", cls=SokoGroup)
def image_cmd() -> None:
    """Manage images (Docker's `image` names for the image verbs, and `prune`)."""


@image_cmd.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all images no container uses, not only dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def image_prune_cmd(ctx: click.Context, all_: bool, force: bool) -> None:
    """Remove dangling images (-a: every image no container uses)."""
    from ..prune import confirm, prune_images, report

    what = ("all images without at least one container associated to them" if all_ else "all dangling images")
    if not confirm(f"This will remove {what}.", force):
        report([])
        return
    report([prune_images(ctx.obj, all_)])


def _alias(name: str, target: str) -> None:
    from importlib import import_module

    module, attr = target.split(":")
    image_cmd.add_command(getattr(import_module(f"soko.commands.{module}"), attr), name)


for _name, _target in (("ls", "images:images_cmd"), ("inspect", "inspect:image_inspect_cmd"),
                       ("history", "images:history_cmd"), ("tag", "images:tag_cmd"), ("rm", "images:rmi_cmd"),
                       ("import", "images:import_cmd"), ("save", "archives:save_cmd"),
                       ("load", "archives:load_cmd"), ("pull", "transfer:pull_cmd"),
                       ("push", "transfer:push_cmd")):
    _alias(_name, _target)
