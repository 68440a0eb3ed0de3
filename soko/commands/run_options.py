"""The options of `soko run` and `soko create`, as data: click's commands are built from this
table (run.py), and `soko run` with plain arguments is parsed from it without click (`parse`).

`parse` reads the subset of click's syntax that a script or a user types (`--opt VALUE`,
`--opt=VALUE`, `-o VALUE`, `-it`) and gives the command the same keyword arguments click would.
For anything else (help, an unknown option, a value click would reject or convert, `--`,
completion) it returns None and click parses the command line, so usage, help and errors stay
exactly click's. tests/cli/test_run_fastpath.py holds the two parsers side by side.
"""
from __future__ import annotations

import os

FLAG, VALUE, MULTIPLE = "flag", "value", "multiple"


class Opt:
    """One option: click's declarations (`decls`, with the parameter name when click would
    not derive it) and what the value is."""

    __slots__ = ("decls", "kind", "type", "default", "help", "metavar", "dest")

    def __init__(self, decls: tuple[str, ...], kind: str, help: str, type: object = str,
                 default: object = None, metavar: str | None = None) -> None:
        self.decls, self.kind, self.help = decls, kind, help
        self.type, self.default, self.metavar = type, default, metavar  # type: str, int, "file" or choices
        names = [d for d in decls if not d.startswith("-")]
        longs = [d for d in decls if d.startswith("--")]
        self.dest = names[0] if names else (longs or list(decls))[0].lstrip("-").replace("-", "_")


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

GLOBAL_ROOT, GLOBAL_DEBUG = "--root", "--debug"


def parse(argv: list[str]) -> tuple[str | None, bool, dict] | None:
    """`[--root DIR] [--debug] run [OPTIONS] IMAGE [COMMAND...]` as (root, debug, run_cmd's keyword
    arguments), or None when click must parse `argv` (another command, or anything unusual)."""
    root: str | None = None
    debug = False
    i = 0
    while i < len(argv) and argv[i] != "run":
        arg = argv[i]
        if arg == GLOBAL_DEBUG and not debug:
            debug = True
        elif arg == GLOBAL_ROOT and root is None and i + 1 < len(argv):
            i += 1
            root = argv[i]
        elif arg.startswith(GLOBAL_ROOT + "=") and root is None:
            root = arg[len(GLOBAL_ROOT) + 1:]
        else:
            return None
        i += 1
    if i == len(argv) or (root is not None and not _plain_dir(root)):
        return None
    kw = parse_run(argv[i + 1:])
    return None if kw is None else (root, debug, kw)


def _plain_dir(path: str) -> bool:
    """A --root click's Path(file_okay=False) takes as it is: missing, or a readable directory."""
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return True
    import stat

    return stat.S_ISDIR(st.st_mode) and os.access(path, os.R_OK)


def parse_run(args: list[str]) -> dict | None:
    """run_cmd's keyword arguments (`detach` among them) for `args`, or None (see `parse`)."""
    by_name: dict[str, Opt] = {d: o for o in (DETACH, *OPTIONS) for d in o.decls if d.startswith("-")}
    kw: dict = {o.dest: (False if o.kind == FLAG else () if o.kind == MULTIPLE else o.default)
                for o in (DETACH, *OPTIONS)}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            opt = by_name.get(name)
            if opt is None or (eq and opt.kind == FLAG):
                return None
            if opt.kind != FLAG and not eq:
                if i == len(args):
                    return None
                value, i = args[i], i + 1
            if not _take(kw, opt, value):
                return None
            continue
        # short options: flags together (-it), the last one may take the next argument (-it -e K=V)
        if len(arg) < 2:
            return None
        for n, ch in enumerate(arg[1:], 2):
            opt = by_name.get("-" + ch)
            if opt is None:
                return None
            if opt.kind == FLAG:
                kw[opt.dest] = True
                continue
            if n != len(arg) or i == len(args):
                return None
            if not _take(kw, opt, args[i]):
                return None
            i += 1
    if i == len(args):
        return None  # no IMAGE: click's usage error
    kw["image"], kw["command"] = args[i], tuple(args[i + 1:])
    return kw


def _take(kw: dict, opt: Opt, value: str) -> bool:
    """Store `value` as click would; False when only click may judge it."""
    if opt.kind == FLAG:
        kw[opt.dest] = True
    elif opt.type == "file":
        return False  # click.Path's checks (a directory, unreadable) are click's to word
    elif opt.type is int:
        try:
            kw[opt.dest] = int(value)
        except ValueError:
            return False
    elif isinstance(opt.type, tuple) and value not in opt.type:
        return False
    elif opt.kind == MULTIPLE:
        kw[opt.dest] = (*kw[opt.dest], value)
    else:
        kw[opt.dest] = value
    return True
