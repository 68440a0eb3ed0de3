"""`python -m runtime run --root STORE [options] IMAGE [COMMAND...]`: the runtime
without the soko CLI, for tests and benchmarks (`soko run` calls the same
functions). Also `python -m runtime sweep --root STORE`.

The options are `docker run`'s (see RunOptions), plus `--snapshotter
auto|overlay|copy`. Parsed by hand: this entry point is timed against
podman, and argparse alone costs more than a millisecond to import.
"""
from __future__ import annotations

import os
import sys

USAGE = ("usage: python -m runtime run --root DIR [--rm] [-i] [-t] [--name N] [-e K=V] [--env-file F] "
         "[-u USER] [-w DIR] [-h HOST] [--entrypoint CMD] [-v SRC:DST[:ro]] [--tmpfs DIR] [--read-only] "
         "[--network none|host] [-m SIZE] [--cpus N] [--pids-limit N] [--runtime builtin|runc|crun] "
         "[--security-opt seccomp=unconfined|FILE] "
         "[--snapshotter auto|overlay|copy] IMAGE [COMMAND...]\n"
         "       python -m runtime sweep --root DIR")

FLAGS = {"--rm": "rm", "-i": "interactive", "--interactive": "interactive", "-t": "tty", "--tty": "tty",
         "--read-only": "read_only"}
VALUES = {"--root": "root", "--name": "name", "-u": "user", "--user": "user", "-w": "workdir",
          "--workdir": "workdir", "-h": "hostname", "--hostname": "hostname", "--entrypoint": "entrypoint",
          "--network": "network", "-m": "memory", "--memory": "memory", "--cpus": "cpus",
          "--pids-limit": "pids_limit", "--runtime": "runtime", "--snapshotter": "snapshotter"}
LISTS = {"-e": "env", "--env": "env", "--env-file": "env_files", "-v": "volumes", "--volume": "volumes",
         "--tmpfs": "tmpfs", "--security-opt": "security_opt"}


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[str, dict, list[str]]:
    """(verb, options, [IMAGE, COMMAND...]); options before IMAGE only, as in docker run."""
    if not argv or argv[0] not in ("run", "sweep"):
        raise UsageError("expected a verb: run or sweep")
    verb, opts = argv[0], {v: [] for v in LISTS.values()}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return verb, opts, argv[i + 1:]
        if not a.startswith("-") or a == "-":
            return verb, opts, argv[i:]
        name, eq, value = a.partition("=")
        if a in ("--help",):
            raise UsageError("")
        if name in FLAGS and not eq:
            opts[FLAGS[name]] = True
        elif len(a) > 2 and a[1] != "-" and all(f"-{c}" in FLAGS for c in a[1:]):  # -it
            for c in a[1:]:
                opts[FLAGS[f"-{c}"]] = True
        elif name in VALUES or name in LISTS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"{a} needs a value")
                value = argv[i]
            if name in VALUES:
                opts[VALUES[name]] = value
            else:
                opts[LISTS[name]].append(value)
        else:
            raise UsageError(f"unknown option {a}")
        i += 1
    return verb, opts, []


def main(argv: list[str] | None = None) -> int:
    from .errors import ContainerError

    try:
        verb, o, rest = parse(list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"{e}\n{USAGE}" if str(e) else USAGE, file=sys.stderr)
        return 125
    root = o.get("root") or os.environ.get("SOKO_ROOT") or "/var/lib/soko"
    from storage.errors import StorageError

    try:
        from storage.images import ImageStore

        if verb == "sweep":
            from .container import sweep

            sweep(ImageStore(root))
            return 0
        if not rest:
            print(f"an image is required\n{USAGE}", file=sys.stderr)
            return 125
        from .options import RunOptions, parse_cpus, parse_size
        from .runner import run

        pids = o.get("pids_limit")
        opts = RunOptions(
            command=rest[1:], entrypoint=o.get("entrypoint"), rm=o.get("rm", False),
            interactive=o.get("interactive", False), tty=o.get("tty", False), name=o.get("name"),
            env=o["env"], env_files=o["env_files"], user=o.get("user"), workdir=o.get("workdir"),
            hostname=o.get("hostname"), volumes=o["volumes"], tmpfs=o["tmpfs"],
            read_only=o.get("read_only", False), network=o.get("network", "default"),
            memory=parse_size(o["memory"]) if o.get("memory") else None,
            cpus=parse_cpus(o["cpus"]) if o.get("cpus") else None,
            pids_limit=int(pids) if pids is not None else None, runtime=o.get("runtime", "builtin"),
            security_opt=o["security_opt"])
        events = os.environ.get("SOKO_RUNTIME_EVENTS")
        on_event = (lambda kind, msg: print(f"[{kind}] {msg}", file=sys.stderr)) if events else None
        return run(ImageStore(root), rest[0], opts, on_event=on_event, snapshotter=o.get("snapshotter"))
    except (ContainerError, StorageError) as e:
        print(f"soko: {e}", file=sys.stderr)
        return getattr(e, "status", 125)
    except ValueError as e:  # --pids-limit that is not a number
        print(f"soko: {e}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
