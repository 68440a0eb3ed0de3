"""The builder's entry (builder.build): a Dockerfile and a context in, a tagged image in the store out."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from storage import mediatypes as mt
from storage import references
from storage.errors import InvalidReference, StorageError

from . import history, layerio
from .errors import BuildError, CacheExportError
from .executor import Executor
from .expand import Lexer
from .options import BuildEvent, BuildOptions, BuildResult
from .parse import parse
from .stages import plan as make_plan

Progress = Callable[[BuildEvent], None]


def read_dockerfile(opts: BuildOptions) -> tuple[str | bytes, str]:
    """The Dockerfile's text and the name errors use for it."""
    path = opts.dockerfile_path()
    if path is None:
        return opts.dockerfile_text, "Dockerfile"  # type: ignore[return-value]
    try:
        return path.read_bytes(), path.name
    except FileNotFoundError:
        raise BuildError(f"cannot find the Dockerfile: {path}") from None
    except IsADirectoryError:
        raise BuildError(f"{path} is a directory, not a Dockerfile") from None
    except OSError as e:
        raise BuildError(f"cannot read {path}: {e.strerror}") from None


def build(store, opts: BuildOptions, progress: Progress | None = None, probe=None) -> BuildResult:
    """Build the image `opts` describes; BuildError (one line) when anything fails,
    in which case nothing is tagged. `probe`: the fingerprint fastpath.probe took before
    the build began; the answer is recorded under it for the next no-change rebuild."""
    from runtime.snapholds import holding

    # the snapshots the build uses stay held (shared flocks) until it ends: no COPY step taking
    # its previous result (reuse.py), of this build or another process's, nor `soko gc`, changes them
    with holding():
        return _build(store, opts, progress, probe)


def _build(store, opts: BuildOptions, progress: Progress | None, probe) -> BuildResult:
    shown: list[BuildEvent] = []  # what the fast path records (not every output line of every RUN)
    recorded: tuple[str, ...] = ()
    if probe is not None:
        from .fastpath import RECORDED_ACTIONS as recorded

    def emit(e: BuildEvent) -> None:
        if e.action in recorded:
            shown.append(e)
        if progress is not None:
            progress(e)

    opts.validate()
    if not Path(opts.context).is_dir():
        raise BuildError(f"build context {opts.context} is not a directory")
    for t in opts.tags:
        try:
            r = references.parse(t)
        except InvalidReference as e:
            raise BuildError(f"invalid tag {t!r}: {e}") from None
        if r.digest:
            raise BuildError(f"invalid tag {t!r}: a tag cannot name a digest")
    try:
        epoch = opts.source_date_epoch
        if epoch is None:
            epoch = history.source_date_epoch(opts.build_args)
    except ValueError as e:
        raise BuildError(str(e)) from None

    text, filename = read_dockerfile(opts)
    df = parse(text, filename)
    for n in df.notices:
        emit(BuildEvent(action="notice", text=n))
    plan = make_plan(df)
    lexer = Lexer(df.escape)
    exe = Executor(store, opts, plan, lexer, emit, epoch)
    exe.ctx.listed = probe  # the context is not listed twice
    exe.declare_globals()
    imports = None
    if opts.cache_from:
        from .cacheimport import Imports

        imports = Imports.open(store, opts.cache_from, exe.platform, lambda msg: _warn(exe, emit, msg))
        exe.use_imports(imports)
    target = plan.target(opts.target)
    final = exe.run(target)
    exe.finish()
    layers = list(final.layers)
    if imports is not None:
        imports.need(final.config.diff_ids)  # the image's own layers: the only ones a cache hit must fetch
        layers = [layerio.descriptor_for(store, diff, opts.storage_compression) if imports.source_of(diff) else d
                  for diff, d in zip(final.config.diff_ids, layers)]
        exe.finder.adopt_imported()

    config = final.config.changed()
    if opts.labels:
        labels = dict(config.config.get("Labels") or {})
        labels.update(opts.labels)
        config.config["Labels"] = labels
    if "created" not in config.data:
        config.data["created"] = history.timestamp(epoch)
    try:
        manifest = store.commit(config, layers, mt.OCI_MANIFEST)
        tagged = [store.tag(t, manifest.digest).familiar() for t in opts.tags]
    except StorageError as e:
        raise BuildError(f"committing the image: {e}") from None
    for out in opts.output:
        _export(store, manifest.digest, tagged, out)
    result = BuildResult(manifest.config.digest, manifest.digest, tagged, exe.steps, exe.cached, exe.warnings,
                         list(imports.fetched) if imports is not None else [])
    _export_cache(store, opts, exe, target.index, imports, emit, result)
    if probe is not None and imports is None and not exe.ctx.remote:
        from . import fastpath

        fastpath.record(store, probe, image_id=result.image_id, manifest=manifest, seen=exe.cache.seen,
                        images=exe.ctx.images, events=shown, stages=exe.shown_when_cached(target))
    return result


def _warn(exe: Executor, emit: Progress, msg: str) -> None:
    exe.warnings.append(msg)
    emit(BuildEvent(action="warning", text=msg))


def _export_cache(store, opts: BuildOptions, exe: Executor, target: int, imports, emit: Progress,
                  result: BuildResult) -> None:
    """--cache-to, after the image is stored: a failure fails the build (CacheExportError, which
    carries `result`), unless ignore-error=true made it a warning."""
    for spec in opts.cache_to:
        if spec.type == "inline":
            continue  # every image soko builds is a usable plain --cache-from already
        from .cacheexport import collect, export

        try:
            export(store, spec, collect(exe, target, spec.mode), imports)
        except CacheExportError as e:
            if not spec.ignore_error:
                e.result = result
                raise
            _warn(exe, emit, str(e))


def _export(store, digest: str, tags: list[str], out) -> None:
    """--output type=oci|docker,dest=FILE through storage's archive writers."""
    from storage.archives import save

    try:
        save(store, tags or [digest], out.dest, fmt=out.type)
    except (StorageError, OSError) as e:
        raise BuildError(f"--output {out.type} to {out.dest}: {e}") from None
