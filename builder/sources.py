"""Where a step's files come from, for COPY, ADD and `RUN --mount` alike.

An *origin* is the build context, another stage, or an image (`--from`,
`from=`). A *source* is what one COPY/ADD argument names in it: an `Item`
(a file, a directory with its walk, an archive to unpack, a download, a git
checkout) together with its cache-key records. Records describe content,
never mtimes (builder/CACHE.md); `--exclude`d files leave no record, so a
change to one of them keeps the step a hit.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from storage.errors import ImageNotFound, StorageError

from . import layerio
from .context import Entry, clean_source, component_regex, has_wildcards, tree_records
from .dockerignore import Matcher, read_patterns
from .errors import DockerfileError

Walk = Callable[[], Iterator[tuple[str, Path, os.stat_result]]]


@dataclass
class Item:
    """One top-level source."""
    name: str                      # its name when copied into a directory
    host: Path | None              # where its bytes are (None: data)
    st: os.stat_result | None
    data: bytes | None = None
    walk: Walk | None = None       # a directory's contents: (relative path, host path, lstat)
    keep_owner: bool = False       # --from keeps uid/gid; the context does not
    archive: bool = False          # ADD: unpack into the destination
    records: list[str] = field(default_factory=list)
    mtime: int | None = None       # override (URL Last-Modified, heredocs, git commit time)
    hash_root: Path | None = None  # where its files' digests are remembered (see HashCache)
    parents: list[tuple[str, os.stat_result]] = field(default_factory=list)  # COPY --parents: dirs above it
    prepare: Callable[["Item"], None] | None = None  # fills host/st/walk when the step runs (git)

    @property
    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)


@dataclass
class Origin:
    """The context (view None), a stage or an image (a view of its layers)."""
    label: str                     # which one: "context", "stage:<index>", or a manifest digest
    view: layerio.RootView | None = None
    content: str = ""              # what it holds, for keys of whole-tree uses: the stage's last key, the digest
    settled: bool = True           # its content follows from `content` (no step of the stage ran in this build)

    @property
    def is_context(self) -> bool:
        return self.view is None


CONTEXT = Origin("context")


def origin(ctx, ref: str, before: int, what: str, line: int) -> Origin:
    """What `--from=ref` / `from=ref` names: an earlier stage (built now if needed) or an image."""
    found = ctx.stage(ref, before)
    if found is not None:
        dep, state = found
        layers = (lambda: ctx.stage_layers(dep.index, before)) if state.partial else state.config.diff_ids
        return Origin(f"stage:{dep.index}", ctx.view(layers), state.key, not state.ran)
    try:
        image = ctx.resolve_image(ref, ctx.platform)
    except (ImageNotFound, StorageError) as e:
        raise DockerfileError(f"{what}: {ref!r} is not a stage of this Dockerfile, and {e}", line,
                              ctx.filename) from None
    return Origin(image.manifest.digest, ctx.view(image.config.diff_ids), image.manifest.digest)


def excluder(patterns: list[str]) -> Matcher | None:
    """`--exclude` patterns (dockerignore syntax), matched against paths relative to the source."""
    return Matcher(read_patterns("\n".join(patterns))) if patterns else None


def split_pivot(src: str) -> tuple[str, int | None]:
    """`x/./y/*.txt` -> (`x/y/*.txt`, 1): COPY --parents keeps the parents after the `/./`."""
    comps = src.split("/")
    real = 0
    for i, c in enumerate(comps):
        if c == "." and real > 0 and i > 0:
            return "/".join(comps[:i] + comps[i + 1:]), real
        if c not in ("", "."):
            real += 1
    return src, None


def _kept(rel: str, pivot: int | None) -> list[str]:
    comps = [c for c in rel.split("/") if c][:-1]
    return comps[pivot:] if pivot is not None else comps


# -- the build context ------------------------------------------------------------
def context_sources(ctx, src: str, unpack: bool, excludes: Matcher | None = None,
                    parents: bool = False) -> list[Item]:
    c = ctx.context
    src, pivot = split_pivot(src) if parents else (src, None)
    rel = clean_source(src)
    entries = c.glob(rel) if has_wildcards(rel) else [e for e in [c.lookup(rel)] if e is not None]
    out = []
    for e in entries:
        name = e.name
        if excludes is not None and e.rel and excludes.excluded(name):
            continue
        item = Item(name, e.path, e.st, hash_root=c.root)
        if parents:
            item.parents = _context_parents(c, e, pivot)
        children = None
        if e.is_dir:
            cut = len(e.rel) + 1 if e.rel else 0
            children = [ch for ch in c.walk(e.rel)  # walked once: for the key, then for the copy
                        if excludes is None or not excludes.excluded(ch.rel[cut:])]
            item.walk = (lambda children=children, cut=cut: ((ch.rel[cut:], ch.abs, ch.st) for ch in children))
        elif unpack and e.is_file:
            from . import add  # (tarfile, zstandard, urllib: ADD only)

            item.archive = add.is_archive(e.path)
        c.hash_all([e, *(children or ())])
        item.records = [f"src ctx {e.rel or '.'}", *tree_records(c, e, name, children)]
        item.records += [f"parent {n} {stat.S_IMODE(s.st_mode):o}" for n, s in item.parents]
        if item.archive:
            item.records.append("unpack")
        out.append(item)
    return out


def _context_parents(c, e: Entry, pivot: int | None) -> list[tuple[str, os.stat_result]]:
    comps = [x for x in e.rel.split("/") if x][:-1]
    keep = _kept(e.rel, pivot)
    first = len(comps) - len(keep)
    return [(name, os.lstat(c.root.joinpath(*comps[:first + i + 1]))) for i, name in enumerate(keep)]


def context_records(ctx, source: str) -> tuple[Entry | None, list[str]]:
    """The context path `source` (RUN --mount bind) and its key records."""
    c = ctx.context
    e = c.lookup(clean_source(source))
    if e is None:
        return None, []
    return e, [f"src ctx {e.rel or '.'}", *tree_records(c, e, "")]


# -- another stage or an image ----------------------------------------------------
def view_sources(ctx, view: layerio.RootView, src: str, excludes: Matcher | None = None,
                 parents: bool = False) -> list[Item]:
    src, pivot = split_pivot(src) if parents else (src, None)
    path = "/" + clean_source(src)
    paths = view_glob(view, path) if has_wildcards(path) else [path]
    out = []
    for p in paths:
        found = view.host_path(p, follow_last=True)
        if found is None:
            continue
        host, st = found
        name = posixpath.basename(p.rstrip("/"))
        if excludes is not None and name and excludes.excluded(name):
            continue
        item = Item(name, Path(host), st, keep_owner=True, hash_root=snapshot_root(ctx))
        if parents:
            comps = [x for x in p.split("/") if x][:-1]
            keep = _kept(p, pivot)
            first = len(comps) - len(keep)
            item.parents = [(n, view.stat("/" + "/".join(comps[:first + i + 1])))  # type: ignore[misc]
                            for i, n in enumerate(keep)]
        if stat.S_ISDIR(st.st_mode):
            resolved = "/" + "/".join(view.resolve(p)[0])
            item.walk = (lambda r=resolved: (w for w in view_walk(view, r)
                                             if excludes is None or not excludes.excluded(w[0])))
        item.records = [f"src view {p}", *view_records(ctx, item, name)]
        item.records += [f"parent {n} {stat.S_IMODE(s.st_mode):o} {s.st_uid}:{s.st_gid}" for n, s in item.parents]
        out.append(item)
    return out


def snapshot_root(ctx) -> Path:
    return Path(ctx.store.root) / "snapshots"


def view_glob(view: layerio.RootView, pattern: str) -> list[str]:
    current = ["/"]
    for comp in [c for c in pattern.split("/") if c]:
        nxt = []
        for d in current:
            if not has_wildcards(comp):
                cand = posixpath.join(d, comp)
                if view.host_path(cand, follow_last=False) is not None:
                    nxt.append(cand)
                continue
            rx = component_regex(comp)
            nxt.extend(posixpath.join(d, n) for n in view.listdir(d) if rx.match(n))
        current = nxt
    return sorted(current)


def view_walk(view: layerio.RootView, top: str) -> Iterator[tuple[str, Path, os.stat_result]]:
    def rec(path: str, rel: str):
        for name in view.listdir(path):
            child = posixpath.join(path, name)
            found = view.host_path(child, follow_last=False)
            if found is None:
                continue
            host, st = found
            crel = f"{rel}/{name}" if rel else name
            yield crel, Path(host), st
            if stat.S_ISDIR(st.st_mode):
                yield from rec(child, crel)

    yield from rec(top, "")


def view_records(ctx, item: Item, name: str) -> list[str]:
    hashes = ctx.hashes
    root = snapshot_root(ctx)

    def rec(rel: str, host: Path, st: os.stat_result) -> str:
        mode = stat.S_IMODE(st.st_mode)
        own = f"{st.st_uid}:{st.st_gid}"
        if stat.S_ISDIR(st.st_mode):
            return f"d {mode:o} {own} {rel}"
        if stat.S_ISLNK(st.st_mode):
            return f"l {mode:o} {own} {rel} -> {os.readlink(host)}"
        if stat.S_ISREG(st.st_mode):
            return f"f {mode:o} {own} {rel} {hashes.digest(host, st, root)}"
        return f"o {stat.S_IFMT(st.st_mode):o} {mode:o} {own} {rel} {st.st_rdev}"

    out = [rec(name, item.host, item.st)]  # type: ignore[arg-type]
    if item.walk is not None:
        out.extend(rec(f"{name}/{r}", h, s) for r, h, s in item.walk())
    return out


# -- heredocs -----------------------------------------------------------------------
def data_item(name: str, data: bytes, mtime: int | None) -> Item:
    return Item(name, None, None, data=data, mtime=mtime, records=[f"h {name} {hashlib.sha256(data).hexdigest()}"])


def with_mode(st: os.stat_result, mode: int) -> os.stat_result:
    fields = list(st)
    fields[0] = stat.S_IFMT(st.st_mode) | mode
    return os.stat_result(fields)
