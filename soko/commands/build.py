"""`soko build`: one line per step (`#N [stage k/n] INSTRUCTION`, CACHED on a
hit), RUN output indented under its step, the image ID last."""
from __future__ import annotations

import os
import sys

import click


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if not eq:
            if what == "--build-arg" and k in os.environ:  # `--build-arg K` takes K from the environment
                out[k] = os.environ[k]
                continue
            raise click.UsageError(f"{what} {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


@click.command("build")
@click.option("-t", "--tag", "tags", multiple=True, help="NAME[:TAG], repeatable.")
@click.option("-f", "--file", "dockerfile", default=None, help="Dockerfile (default CONTEXT/Dockerfile; - for stdin).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V",
              help="A build argument (ARG), repeatable; K alone takes K from the environment.")
@click.option("--target", default=None, help="Build this stage (by name) and what it needs.")
@click.option("--no-cache", is_flag=True, help="Run every step; reuse nothing from the build cache.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="A label for the image, repeatable.")
@click.option("--network", type=click.Choice(["default", "none", "host"]), default="default",
              help="Network of RUN steps.")
@click.option("--secret", "secrets", multiple=True,
              help="id=ID[,src=FILE|env=VAR]: lent to RUN --mount=type=secret, never stored.")
@click.option("--ssh", "ssh", multiple=True, help="default|ID=SOCKET: an ssh-agent for RUN --mount=type=ssh.")
@click.option("--compression", type=click.Choice(["gzip", "zstd", "uncompressed"]), default="uncompressed",
              help="How new layers are stored (uncompressed, as Docker keeps them; push compresses).")
@click.option("-o", "--output", "outputs", multiple=True, help="type=oci|docker,dest=FILE")
@click.option("--push", is_flag=True, help="Push the tags after building.")
@click.option("--cache-from", "cache_from", multiple=True,
              help="type=registry,ref=REF | type=local,src=DIR | REF (a plain image): steps to reuse.")
@click.option("--cache-to", "cache_to", multiple=True,
              help="type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=...]: export the cache.")
@click.option("--progress", type=click.Choice(["auto", "plain", "quiet"]), default="auto",
              help="Step output: plain lines, or none.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Stages built at once (default: the CPU count).")
@click.option("-q", "--quiet", is_flag=True, help="Print the image ID only.")
@click.argument("context", type=click.Path(exists=True, allow_dash=True))  # a file: the builder says why not
@click.pass_context
def build_cmd(ctx: click.Context, tags, dockerfile, build_args, target, no_cache, labels, network, secrets, ssh,
              compression, outputs, push, cache_from, cache_to, progress, jobs, quiet, context) -> None:
    """Build an image from a Dockerfile (CONTEXT -: the Dockerfile from stdin and no context, as docker)."""
    from builder import BuildOptions, Output
    from builder.cachespec import parse_from, parse_to
    from builder.errors import CacheSpecError
    from builder.secrets import SecretSource, SshSource

    try:
        caches_from = [parse_from(c) for c in cache_from]
        caches_to = [parse_to(c) for c in cache_to]
    except CacheSpecError as e:
        raise click.UsageError(str(e)) from None
    if context == "-" and dockerfile == "-":
        raise click.UsageError("the Dockerfile and the context cannot both come from stdin")
    opts = BuildOptions(
        context=context, tags=list(tags), build_args=_pairs(build_args, "--build-arg"), target=target,
        no_cache=no_cache, labels=_pairs(labels, "--label"), network=network, compression=compression,
        output=[Output.parse(o) for o in outputs], progress="quiet" if quiet else progress, quiet=quiet,
        secrets=[SecretSource.parse(s) for s in secrets], ssh=[SshSource.parse(s) for s in ssh], jobs=jobs,
        cache_from=caches_from, cache_to=caches_to)
    if dockerfile == "-" or context == "-":
        opts.dockerfile_text = _stdin_dockerfile()
    elif dockerfile is not None:
        opts.dockerfile = dockerfile
    opts.validate()
    if context != "-":
        _build(ctx, opts, push)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="soko-no-context-") as empty:
        opts.context = empty
        _build(ctx, opts, push)


def _stdin_dockerfile() -> bytes:
    """The Dockerfile on stdin. A context archive there (docker takes one) is refused, not parsed."""
    from storage import compression

    data = sys.stdin.buffer.read()
    if compression.detect(data[:10]) != compression.NONE or data[257:262] == b"ustar":
        from ..errors import SokoError

        raise SokoError("a build context archive on stdin is not supported; give the context as a "
                        "directory (with -f - for a Dockerfile on stdin)")
    return data


def _build(ctx: click.Context, opts, push: bool) -> None:
    from builder import fastpath

    store = ctx.obj.image_store()
    quiet = opts.quiet
    show = not quiet and opts.progress != "quiet"

    def on_event(ev) -> None:
        if ev.kind in ("warning", "notice"):
            click.echo(f"{ev.kind.upper() if ev.kind == 'warning' else 'NOTE'}: {ev.text}", err=True)
        elif not show:
            return
        elif ev.kind == "step":
            click.echo(ev.header() + (" CACHED" if ev.cached else ""))
        elif ev.kind == "output":
            click.echo(f"#{ev.step} {ev.text}")
        elif ev.kind == "done" and not ev.metadata and not ev.cached:
            click.echo(f"#{ev.step} DONE {ev.elapsed:.1f}s")
        elif ev.kind == "runtime" and ev.id == "fallback":
            click.echo(f"NOTE: {ev.text}", err=True)

    # nothing changed since a recorded build: its answer, without loading the builder (fastpath.py)
    probe = fastpath.probe(opts)
    replay = fastpath.replay(store, opts, probe) if probe is not None else None
    if replay is not None:
        for ev in replay.events:
            on_event(ev)
        image_id, tags = replay.image_id, replay.tags
    else:
        image_id, tags = _full_build(store, opts, on_event, probe, show)
    if push:
        from .transfer_core import push_image

        for t in tags:
            push_image(store, t, None, insecure=False, jobs=None, quiet=quiet)
    click.echo(image_id)


def _full_build(store, opts, on_event, probe, show: bool) -> tuple[str, list[str]]:
    import gc

    from builder import RunFailed, build
    from builder.errors import CacheExportError

    # What exists by now (every module, the fingerprint's walk of the context) outlives the
    # build: out of the collector's sight, the full collections a build sets off (a COPY of
    # thousands of files allocates enough for several) do not go over it again; given back after.
    gc.freeze()
    try:
        result = build(store, opts, on_event, probe=probe)
    except RunFailed as exc:
        if not show and exc.output:  # the lines were not streamed: show them now
            click.echo("\n".join(exc.output), err=True)
        raise
    except CacheExportError as exc:  # the image is stored and tagged; the command still fails
        click.echo(exc.result.image_id)  # type: ignore[attr-defined]
        raise
    finally:
        gc.unfreeze()
    return result.image_id, result.tags
