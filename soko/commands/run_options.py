"""The options of `soko run` and `soko create`, as data: click's commands are built from this
table (run.py), and `soko run` with plain arguments is parsed from it without click (`parse`;
how, and when click parses instead: option_table.py). tests/cli/test_run_fastpath.py holds the
two parsers side by side.
"""
from __future__ import annotations

from .option_table import FLAG, MULTIPLE, VALUE, Opt, defaults, parse_options, split_globals

DETACH = Opt(("-d", "--detach"), FLAG, "Run in the background and print the container ID.")

OPTIONS: tuple[Opt, ...] = (
    Opt(("--rm",), FLAG, "Remove the container when it exits."),
    Opt(("-i", "--interactive"), FLAG, "Keep stdin open."),
    Opt(("-t", "--tty"), FLAG, "Allocate a pseudo-terminal."),
    Opt(("--name",), VALUE, "A name for the container."),
    Opt(("-e", "--env"), MULTIPLE, "K=V, or K to take it from this environment."),
    Opt(("--env-file",), MULTIPLE, "Read K=V lines from a file, repeatable.", type="file"),
    Opt(("-u", "--user"), VALUE, "USER[:GROUP] (names or ids)."),
    Opt(("-w", "--workdir"), VALUE, "Working directory inside the container."),
    Opt(("-h", "--hostname"), VALUE, "The container's host name (default: its short ID)."),
    Opt(("--entrypoint",), VALUE, "Replace the image's ENTRYPOINT."),
    Opt(("-v", "--volume", "volumes"), MULTIPLE, "SRC:DST[:ro] or NAME:DST."),
    Opt(("--tmpfs",), MULTIPLE, "Mount a tmpfs at DIR, repeatable.", metavar="DIR[:OPTS]"),
    Opt(("--read-only",), FLAG, "Mount the container's root filesystem read-only."),
    Opt(("-p", "--publish"), MULTIPLE, "[IP:][HOST:]CONTAINER[/tcp|/udp]: a port on the host."),
    Opt(("-P", "--publish-all"), FLAG, "Publish the exposed ports to free host ports."),
    Opt(("--network", "--net", "network"), VALUE, "bridge (default), none, host or a network's name.",
        default="default"),
    Opt(("--network-alias", "network_aliases"), MULTIPLE,
        "Another name for the container on a user-defined network."),
    Opt(("-m", "--memory"), VALUE, "Memory limit, e.g. 32m."),
    Opt(("--cpus",), VALUE, "CPU limit, e.g. 1.5."),
    Opt(("--pids-limit",), VALUE, "At most this many processes.", type=int),
    Opt(("--runtime", "runtime_name"), VALUE, "The OCI runtime: soko's own, or runc/crun.",
        type=("builtin", "runc", "crun"), default="builtin"),
    Opt(("--security-opt", "security_opt"), MULTIPLE,
        "seccomp=unconfined or seccomp=PROFILE.json (Docker's profile format)."),
    Opt(("-l", "--label", "labels"), MULTIPLE, "K=V metadata."),
    Opt(("--restart",), VALUE, "no, on-failure[:N], always or unless-stopped.", default="no"),
    Opt(("--health-cmd",), VALUE, "Command to run to check health."),
    Opt(("--health-interval",), VALUE, "Time between checks (e.g. 30s)."),
    Opt(("--health-timeout",), VALUE, "Longest a check may run (e.g. 30s)."),
    Opt(("--health-start-period",), VALUE, "Start time before failures count."),
    Opt(("--health-retries",), VALUE, "Failures in a row for unhealthy.", type=int),
    Opt(("--no-healthcheck",), FLAG, "Disable the image's HEALTHCHECK."),
    Opt(("--stop-signal",), VALUE, "Signal to stop the container (default SIGTERM)."),
    Opt(("--stop-timeout",), VALUE, "Seconds before SIGKILL on stop (default 10).", type=int),
    Opt(("--pull",), VALUE, "Pull the image before running.", type=("missing", "always", "never"),
        default="missing"),
)


def parse(argv: list[str]) -> tuple[str | None, bool, dict] | None:
    """`[--root DIR] [--debug] run [OPTIONS] IMAGE [COMMAND...]` as (root, debug, run_cmd's keyword
    arguments), or None when click must parse `argv` (another command, or anything unusual)."""
    g = split_globals(argv)
    if g is None or g[2][0] != "run":
        return None
    kw = parse_run(g[2][1:])
    return None if kw is None else (g[0], g[1], kw)


def parse_run(args: list[str]) -> dict | None:
    """run_cmd's keyword arguments (`detach` among them) for `args`, or None (see `parse`)."""
    kw = defaults((DETACH, *OPTIONS))
    i = parse_options(args, (DETACH, *OPTIONS), kw)
    if i is None or i == len(args):
        return None  # no IMAGE: click's usage error
    kw["image"], kw["command"] = args[i], tuple(args[i + 1:])
    return kw


__all__ = ["DETACH", "FLAG", "MULTIPLE", "OPTIONS", "VALUE", "Opt", "parse", "parse_run"]
