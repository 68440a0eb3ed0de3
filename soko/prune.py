"""Pruning: `image prune`, `volume prune`, and `system prune`, which runs every pruner in PRUNERS.

A pruner is a function `(ctx_obj, all_: bool) -> PruneResult`. Other verbs plug into `system
prune` by adding one line to PRUNERS (Docker's order: containers, networks, volumes, images,
build cache), e.g.
    Pruner("containers", "soko.commands.containers:prune_containers", "all stopped containers"),
    Pruner("build cache", "soko.commands.builder:prune_build_cache", "all dangling build cache",
           "all build cache"),
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import click


@dataclass
class PruneResult:
    title: str                   # "Deleted Images", "Deleted Volumes", ...
    lines: list[str] = field(default_factory=list)
    reclaimed: int = 0           # bytes freed on disk


@dataclass
class Pruner:
    name: str
    target: str                  # "module:function"
    warning: str                 # the WARNING list entry (Docker's words)
    warning_all: str | None = None  # ... with -a
    only_with: str | None = None  # a system prune flag that must be given ("volumes")

    def load(self) -> Callable[..., PruneResult]:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


PRUNERS: list[Pruner] = [
    Pruner("networks", "soko.commands.network:prune_networks", "all networks not used by at least one container"),
    Pruner("volumes", "soko.commands.volume:prune_volumes", "all volumes not used by at least one container",
           only_with="volumes"),
    Pruner("images", "soko.prune:prune_images", "all dangling images",
           "all images without at least one container associated to them"),
    Pruner("build cache", "soko.commands.buildcache:prune_build_cache", "all dangling build cache",
           "all build cache"),
]


def confirm(warning: str, force: bool) -> bool:
    """Docker's prompt: `WARNING! ...` then `Are you sure you want to continue? [y/N]`."""
    if force:
        return True
    click.echo(f"WARNING! {warning}")
    click.echo("Are you sure you want to continue? [y/N] ", nl=False)
    answer = click.get_text_stream("stdin").readline().strip().lower()
    return answer in ("y", "yes")


def report(results: list[PruneResult]) -> None:
    """Each result's section, then `Total reclaimed space: ...` (go-units HumanSize)."""
    from .render import human_size

    for r in results:
        if r.lines:
            click.echo(f"{r.title}:")
            for line in r.lines:
                click.echo(line)
            click.echo()
    click.echo(f"Total reclaimed space: {human_size(sum(r.reclaimed for r in results), 4)}")


def images_in_use(root) -> set[str]:
    """Image IDs that containers (running or stopped) were made from."""
    from .store_usage import containers

    return {c.image for c in containers(root)}


def prune_images(obj, all_: bool) -> PruneResult:
    """Remove dangling images (all unused ones with -a), then free the blobs and snapshots only
    they used. Blobs of other unreferenced content keep gc's grace period."""
    from runtime import snapshots
    from storage import gc

    store = obj.image_store()
    in_use = images_in_use(store.root)
    result = PruneResult("Deleted Images")
    victims: list[str] = []
    for e in store.list():
        if e.image_id in in_use or e.manifest_digest in victims:
            continue
        if e.repository == "<none>" or all_:
            victims.append(e.manifest_digest)
    blobs: set[str] = set()
    for digest in victims:
        blobs.update(_blobs_of(store, digest))
        try:
            events = store.remove(digest, force=True)
        except Exception:  # noqa: BLE001 - gone meanwhile (an earlier removal took it along)
            continue
        result.lines.extend(f"{ev.kind.lower()}: {ev.what}" for ev in events)
    if victims:
        report_ = gc.collect(store, candidates=blobs)
        result.reclaimed += report_.freed
        sizes = {c: _tree_size(snapshots.Snapshots(store).path(c)) for c in snapshots.prune(store, dry_run=True)}
        result.reclaimed += sum(sizes.get(c, 0) for c in snapshots.prune(store))  # a held one stays
    return result


def _blobs_of(store, digest: str) -> set[str]:
    """The manifest (index and children), configs and layers of a recorded image."""
    from storage.model import Index

    out: set[str] = set()
    todo = [digest]
    while todo:
        d = todo.pop()
        out.add(d)
        try:
            m = store.manifest(d)
        except Exception:  # noqa: BLE001 - a child this machine never pulled
            continue
        if isinstance(m, Index):
            todo.extend(x.digest for x in m.manifests)
        else:
            out.update(x.digest for x in m.references())
    return out


def _tree_size(path) -> int:
    from .store_usage import tree_size

    return tree_size(path)
