"""The options of `soko pull` and `soko push`, as data (option_table.py): click's commands are
built from these tables (transfer.py), and a plain pull or push is read from them without click
(soko/entry.py), whose import and command tree cost a pull ~20 ms of its start-up.
tests/cli/test_transfer_fastpath.py holds the parsers beside click."""
from __future__ import annotations

from .option_table import FLAG, VALUE, Opt, defaults, parse_options

INSECURE = Opt(("--insecure",), FLAG, "Allow plain HTTP and unverified TLS.")
JOBS = Opt(("-j", "--jobs"), VALUE, "Blobs at once.", type=range(1, 65))

PULL_OPTIONS: tuple[Opt, ...] = (
    INSECURE,
    Opt(("--platform",), VALUE, "os/arch[/variant] (default: this machine)."),
    JOBS,
    Opt(("-q", "--quiet"), FLAG, "No progress; only the image's full reference."),
)

# (--compression-level is click's alone: its check depends on --compression; with it, click parses)
PUSH_OPTIONS: tuple[Opt, ...] = (
    INSECURE,
    JOBS,
    Opt(("-q", "--quiet"), FLAG, "No progress; only the digest line."),
    Opt(("--compression",), VALUE, "How uncompressed layers travel (default gzip); compressed ones go as they are.",
        type=("gzip", "zstd", "none"), default="gzip", eager=True),
)


def _positionals(args: list[str], options: tuple[Opt, ...], least: int, most: int) -> tuple[dict, list[str]] | None:
    kw = defaults(options)
    i = parse_options(args, options, kw)
    if i is None or not least <= len(args) - i <= most or any(a.startswith("-") for a in args[i:]):
        return None  # click's: a usage error, or options after the arguments
    return kw, args[i:]


def parse_pull(args: list[str]) -> dict | None:
    """pull_cmd's keyword arguments for `args` (what follows `pull`), or None: click's to parse."""
    got = _positionals(args, PULL_OPTIONS, 1, 1)
    if got is None:
        return None
    kw, (kw["ref"],) = got
    return kw


def parse_push(args: list[str]) -> dict | None:
    """push_cmd's keyword arguments for `args` (what follows `push`), or None: click's to parse."""
    got = _positionals(args, PUSH_OPTIONS, 1, 2)
    if got is None:
        return None
    kw, rest = got
    kw["image"], kw["dest"], kw["compression_level"] = rest[0], rest[1] if len(rest) == 2 else None, None
    return kw


PARSERS = {"pull": parse_pull, "push": parse_push}
