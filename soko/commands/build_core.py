"""What `soko build` does, without click: reached through click (build.py) or straight from a
plain command line (soko/entry.py, build_options.py). One line per step (`#N [stage k/n]
INSTRUCTION`, CACHED on a hit), RUN output indented under its step, the image ID last."""
from __future__ import annotations

import os
import sys

from ..entry import echo
from ..errors import UsageError


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if not eq:
            if what == "--build-arg" and k in os.environ:  # `--build-arg K` takes K from the environment
                out[k] = os.environ[k]
                continue
            raise UsageError(f"{what} {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


def _checked(kw: dict) -> tuple[list, list, dict[str, str], dict[str, str]]:
    """The parts of the command line a usage error is about, read (cache specs, build args,
    labels), in the order the errors are reported; UsageError for the first one wrong."""
    caches_from, caches_to = [], []
    if kw["cache_from"] or kw["cache_to"]:
        from builder.cachespec import parse_from, parse_to
        from builder.errors import CacheSpecError

        try:
            caches_from = [parse_from(c) for c in kw["cache_from"]]
            caches_to = [parse_to(c) for c in kw["cache_to"]]
        except CacheSpecError as e:
            raise UsageError(str(e)) from None
    if kw["context"] == "-" and kw["dockerfile"] == "-":
        raise UsageError("the Dockerfile and the context cannot both come from stdin")
    return caches_from, caches_to, _pairs(kw["build_args"], "--build-arg"), _pairs(kw["labels"], "--label")


def usage_error(kw: dict) -> str | None:
    """The usage error `run` would raise for these arguments, before doing anything; None if none."""
    try:
        _checked(kw)
    except UsageError as e:
        return str(e)
    return None


def run(obj, kw: dict) -> None:
    """`soko build` with build_cmd's keyword arguments, for the context `obj` (soko/context.py)."""
    from builder import BuildOptions, Output
    from builder.secrets import SecretSource, SshSource

    caches_from, caches_to, build_args, labels = _checked(kw)
    context, dockerfile, quiet = kw["context"], kw["dockerfile"], kw["quiet"]
    opts = BuildOptions(
        context=context, tags=list(kw["tags"]), build_args=build_args, target=kw["target"],
        no_cache=kw["no_cache"], labels=labels, network=kw["network"], compression=kw["compression"],
        output=[Output.parse(o) for o in kw["outputs"]], progress="quiet" if quiet else kw["progress"],
        quiet=quiet, secrets=[SecretSource.parse(s) for s in kw["secrets"]],
        ssh=[SshSource.parse(s) for s in kw["ssh"]], jobs=kw["jobs"], cache_from=caches_from, cache_to=caches_to)
    if dockerfile == "-" or context == "-":
        opts.dockerfile_text = _stdin_dockerfile()
    elif dockerfile is not None:
        opts.dockerfile = dockerfile
    opts.validate()
    if context != "-":
        _build(obj, opts, kw["push"])
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="soko-no-context-") as empty:
        opts.context = empty
        _build(obj, opts, kw["push"])


def _stdin_dockerfile() -> bytes:
    """The Dockerfile on stdin. A context archive there (docker takes one) is refused, not parsed."""
    from storage import compression

    data = sys.stdin.buffer.read()
    if compression.detect(data[:10]) != compression.NONE or data[257:262] == b"ustar":
        from ..errors import SokoError

        raise SokoError("a build context archive on stdin is not supported; give the context as a "
                        "directory (with -f - for a Dockerfile on stdin)")
    return data


def _build(obj, opts, push: bool) -> None:
    from builder import fastpath

    store = obj.image_store()
    quiet = opts.quiet
    show = not quiet and opts.progress != "quiet"

    def on_event(ev) -> None:
        if ev.kind in ("warning", "notice"):
            echo(f"{ev.kind.upper() if ev.kind == 'warning' else 'NOTE'}: {ev.text}", err=True)
        elif not show:
            return
        elif ev.kind == "step":
            echo(ev.header() + (" CACHED" if ev.cached else ""))
        elif ev.kind == "output":
            echo(f"#{ev.step} {ev.text}")
        elif ev.kind == "done" and not ev.metadata and not ev.cached:
            echo(f"#{ev.step} DONE {ev.elapsed:.1f}s")
        elif ev.kind == "runtime" and ev.id == "fallback":
            echo(f"NOTE: {ev.text}", err=True)

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
    echo(image_id)


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
            echo("\n".join(exc.output), err=True)
        raise
    except CacheExportError as exc:  # the image is stored and tagged; the command still fails
        echo(exc.result.image_id)  # type: ignore[attr-defined]
        raise
    finally:
        gc.unfreeze()
    return result.image_id, result.tags
