"""A development entry beside `soko build`: `python -m builder build [flags] CONTEXT`.

The flags are a subset of soko build's (CLI.md); `soko build` is what users and
the benchmark run. This module is the only place in builder/ that prints.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import BuildError, BuildEvent, BuildOptions, Output, build


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq:
            if what == "--build-arg" and k in os.environ:
                v = os.environ[k]  # docker: `--build-arg NAME` takes it from the environment
            elif what == "--build-arg":
                continue
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builder")
    p.add_argument("--root", default=os.environ.get("SOKO_ROOT") or
                   ("/var/lib/soko" if os.geteuid() == 0 else os.path.expanduser("~/.local/share/soko")))
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build")
    b.add_argument("-t", "--tag", action="append", default=[])
    b.add_argument("-f", "--file")
    b.add_argument("--build-arg", action="append", default=[])
    b.add_argument("--target")
    b.add_argument("--no-cache", action="store_true")
    b.add_argument("--label", action="append", default=[])
    b.add_argument("--network", default="default")
    b.add_argument("--compression", default="uncompressed")
    b.add_argument("--output", "-o", action="append", default=[])
    b.add_argument("--progress", default="auto")
    b.add_argument("-q", "--quiet", action="store_true")
    b.add_argument("context")
    a = p.parse_args(argv)

    from storage.errors import StorageError
    from storage.images import ImageStore

    text = None
    dockerfile = a.file
    if a.file == "-":
        text, dockerfile = sys.stdin.buffer.read(), None
    try:
        opts = BuildOptions(context=a.context, dockerfile=dockerfile, dockerfile_text=text, tags=a.tag,
                            build_args=_kv(a.build_arg, "--build-arg"), target=a.target, no_cache=a.no_cache,
                            labels=_kv(a.label, "--label"), network=a.network, compression=a.compression,
                            output=[Output.parse(o) for o in a.output], progress=a.progress, quiet=a.quiet)
        quiet = a.quiet or a.progress == "quiet"

        def show(e: BuildEvent) -> None:
            if quiet:
                return
            if e.kind == "step":
                print(e.header() + ("\n#%d CACHED" % e.step if e.cached else ""), flush=True)
            elif e.kind == "output":
                print(f"#{e.step} {e.text}", flush=True)
            elif e.kind in ("notice", "warning"):
                print(f"{e.kind.upper()}: {e.text}", file=sys.stderr, flush=True)

        result = build(ImageStore(a.root), opts, show)
    except (BuildError, StorageError) as e:
        out = getattr(e, "output", None)
        if out:
            print("\n".join(out), file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
