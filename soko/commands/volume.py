"""`soko volume create|ls|inspect|rm|prune`: the named volumes `run -v NAME:/path` keeps at
`<store root>/volumes/NAME/_data`, shown as Docker's `local` driver shows its volumes."""
from __future__ import annotations

import json
import os
import shutil
import sys

import click

from ..cli import SokoGroup

DRIVER = "local"
VOLUME_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
                  "Scope": "SCOPE", "Size": "SIZE", "Links": "LINKS"}


@click.group("volume", cls=SokoGroup)
def volume_cmd() -> None:
    """Manage named volumes."""


def _meta(root, name: str) -> dict:
    try:
        data = json.loads((_dir(root, name) / "soko-volume.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _dir(root, name: str):
    from ..store_usage import volumes_dir

    return volumes_dir(root) / name


def _exists(root, name: str) -> bool:
    return (_dir(root, name) / "_data").is_dir()


def _inspect(root, name: str) -> dict:
    from ..render import local_rfc3339_at

    meta = _meta(root, name)
    created = meta.get("created") or local_rfc3339_at(os.stat(_dir(root, name) / "_data").st_mtime)
    return {"CreatedAt": created, "Driver": DRIVER, "Labels": meta.get("labels") or {},
            "Mountpoint": str(_dir(root, name) / "_data"), "Name": name, "Options": {}, "Scope": "local"}


@volume_cmd.command("create")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="A label for the volume, repeatable.")
@click.option("-d", "--driver", default=DRIVER, help="Volume driver (only `local`).")
@click.argument("name", required=False)
@click.pass_context
def create_cmd(ctx: click.Context, labels: tuple[str, ...], driver: str, name: str | None) -> None:
    """Create a volume (NAME: a random one when missing) and print its name."""
    import time

    from storage.private import private_dir

    from ..errors import SokoError
    from ..render import local_rfc3339_at
    from ..store_usage import VOLUME_NAME

    if driver != DRIVER:
        raise SokoError(f"volume driver {driver!r} is not supported (only {DRIVER!r})")
    name = name or os.urandom(32).hex()
    if not VOLUME_NAME.fullmatch(name):
        raise SokoError(f'"{name}" includes invalid characters for a local volume name, only '
                        '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed')
    root = ctx.obj.root
    if not _exists(root, name):
        data = private_dir(_dir(root, name)) / "_data"
        data.mkdir(mode=0o755, exist_ok=True)
        meta = {"created": local_rfc3339_at(time.time()),
                "labels": dict(lbl.partition("=")[::2] for lbl in labels)}
        (_dir(root, name) / "soko-volume.json").write_text(json.dumps(meta))
    click.echo(name)


@volume_cmd.command("ls")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="dangling=true|false (not used by a container), name=TEXT, label=KEY[=VALUE].")
@click.option("--format", "fmt", default=None, help="Go template, `table TEMPLATE`, or `json`.")
@click.option("-q", "--quiet", is_flag=True, help="Only volume names.")
@click.pass_context
def ls_cmd(ctx: click.Context, filters: tuple[str, ...], fmt: str | None, quiet: bool) -> None:
    """List volumes."""
    from ..errors import SokoError
    from ..formatter import FormatRow, render
    from ..image_list import labels_match
    from ..store_usage import volume_names, volumes_in_use

    root = ctx.obj.root
    used = volumes_in_use(root)
    rows = []
    for name in volume_names(root):
        meta = _meta(root, name)
        labels = meta.get("labels") or {}
        keep = True
        for f in filters:
            key, _, value = f.partition("=")
            if key == "dangling":
                keep &= (name not in used) == (value.lower() in ("true", "1"))
            elif key == "name":
                keep &= value in name
            elif key == "label":
                keep &= labels_match([value], labels)
            else:
                raise SokoError(f"Invalid filter '{key}'")
        if keep:
            rows.append(FormatRow({"Driver": DRIVER, "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
                                   "Links": "N/A", "Mountpoint": str(_dir(root, name) / "_data"), "Name": name,
                                   "Scope": "local", "Size": "N/A"}, "*formatter.volumeContext"))
    if quiet and fmt in (None, "table"):
        fmt = "{{.Name}}"
    click.echo(render(fmt, rows, VOLUME_HEADERS, "table {{.Driver}}\t{{.Name}}"), nl=False)


@volume_cmd.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Go template over each volume.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect_cmd(ctx: click.Context, fmt: str | None, names: tuple[str, ...]) -> None:
    """Show details of volumes as JSON."""
    from ..errors import SokoError
    from ..formatter import render_one

    root = ctx.obj.root
    for n in names:
        if not _exists(root, n):
            raise SokoError(f"get {n}: no such volume")
    objects = [_inspect(root, n) for n in names]
    if fmt:
        click.echo("".join(render_one(fmt, o) for o in objects), nl=False)
    else:
        click.echo(json.dumps(objects, indent=4))


@volume_cmd.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even a volume a container uses.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm_cmd(ctx: click.Context, force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes (not those in use, unless -f)."""
    from ..store_usage import volumes_in_use

    root = ctx.obj.root
    used = volumes_in_use(root)
    failed = False
    for n in names:
        if not _exists(root, n):
            click.echo(f"soko: get {n}: no such volume", err=True)
            failed = True
        elif n in used and not force:
            click.echo(f"soko: remove {n}: volume is in use", err=True)
            failed = True
        else:
            shutil.rmtree(_dir(root, n))
            click.echo(n)
    if failed:
        sys.exit(1)


@volume_cmd.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="label=KEY[=VALUE] only.")
@click.pass_context
def prune_cmd(ctx: click.Context, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all volumes no container uses."""
    from ..prune import confirm, report

    if not confirm("This will remove all local volumes not used by at least one container.", force):
        report([])
        return
    report([prune_volumes(ctx.obj, False, filters)])


def prune_volumes(obj, all_: bool, filters: tuple[str, ...] = ()):
    """The pruner of `volume prune` and `system prune --volumes`."""
    from ..image_list import labels_match
    from ..prune import PruneResult
    from ..store_usage import tree_size, volume_names, volumes_in_use

    root = obj.root
    used = volumes_in_use(root)
    wanted = [f.partition("=")[2] for f in filters if f.startswith("label=")]
    result = PruneResult("Deleted Volumes")
    for name in volume_names(root):
        if name in used or not labels_match(wanted, _meta(root, name).get("labels") or {}):
            continue
        result.reclaimed += tree_size(_dir(root, name) / "_data")
        shutil.rmtree(_dir(root, name))
        result.lines.append(name)
    return result
