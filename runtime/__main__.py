"""`python -m runtime run --root STORE [options] IMAGE [COMMAND...]`: the runtime
without the soko CLI, for tests and benchmarks. `soko run` calls the same
functions. Also `python -m runtime sweep --root STORE`.
"""
from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime", add_help=False)
    p.add_argument("verb", choices=["run", "sweep"])
    p.add_argument("--root", default=os.environ.get("SOKO_ROOT") or "/var/lib/soko")
    p.add_argument("--help", action="help")
    p.add_argument("--rm", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("-h", "--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--network", default="default")
    p.add_argument("--memory", "-m")
    p.add_argument("--cpus")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--runtime", default="builtin")
    p.add_argument("--snapshotter")
    return p


_NO_VALUE = {"--rm", "-i", "--interactive", "-t", "--tty", "--read-only", "--help"}


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Options before the image, and IMAGE COMMAND... (everything from the first positional)."""
    i = 1  # argv[0] is the verb
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[:i], argv[i + 1:]
        if not a.startswith("-") or a == "-":
            return argv[:i], argv[i:]
        if "=" in a or a in _NO_VALUE or (len(a) > 2 and a[1] != "-" and all(c in "it" for c in a[1:])):
            i += 1
        else:
            i += 2
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts_part, rest = _split(argv)
    args = _parser().parse_args(opts_part)
    args.image = rest[0] if rest else None
    args.command = rest[1:]
    from .errors import ContainerError

    try:
        from storage.errors import StorageError
        from storage.images import ImageStore
    except ImportError:  # pragma: no cover
        StorageError = ContainerError  # type: ignore[misc,assignment]
    try:
        if args.verb == "sweep":
            from .containers import sweep

            sweep(args.root)
            return 0
        if not args.image:
            print("python -m runtime run: an image is required", file=sys.stderr)
            return 125
        from .options import RunOptions, parse_cpus, parse_size
        from .runner import run

        opts = RunOptions(
            command=args.command, entrypoint=args.entrypoint, rm=args.rm, interactive=args.interactive,
            tty=args.tty, name=args.name, env=args.env, env_files=args.env_file, user=args.user,
            workdir=args.workdir, hostname=args.hostname, volumes=args.volume, tmpfs=args.tmpfs,
            read_only=args.read_only, network=args.network,
            memory=parse_size(args.memory) if args.memory else None,
            cpus=parse_cpus(args.cpus) if args.cpus else None, pids_limit=args.pids_limit,
            runtime=args.runtime)
        store = ImageStore(args.root)
        events = os.environ.get("SOKO_RUNTIME_EVENTS")
        on_event = (lambda kind, msg: print(f"[{kind}] {msg}", file=sys.stderr)) if events else None
        return run(store, args.image, opts, on_event=on_event, snapshotter=args.snapshotter)
    except ContainerError as e:
        print(f"soko: {e}", file=sys.stderr)
        return e.status
    except StorageError as e:
        print(f"soko: {e}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
