"""The options of `soko build`, as data (option_table.py): click's command is built from this
table (build.py), and a plain build is read from it without click (soko/entry.py), whose
import and command tree were ~10 ms of the ~79 ms of CPU a no-change rebuild of 5,000 files took.
tests/cli/test_build_parse.py holds the parser beside click."""
from __future__ import annotations

import os

from .option_table import FLAG, MULTIPLE, VALUE, Opt, at_least, defaults, parse_interspersed

OPTIONS: tuple[Opt, ...] = (
    Opt(("-t", "--tag", "tags"), MULTIPLE, "NAME[:TAG], repeatable."),
    Opt(("-f", "--file", "dockerfile"), VALUE, "Dockerfile (default CONTEXT/Dockerfile; - for stdin)."),
    Opt(("--build-arg", "build_args"), MULTIPLE,
        "A build argument (ARG), repeatable; K alone takes K from the environment.", metavar="K=V"),
    Opt(("--target",), VALUE, "Build this stage (by name) and what it needs."),
    Opt(("--no-cache",), FLAG, "Run every step; reuse nothing from the build cache."),
    Opt(("--label", "labels"), MULTIPLE, "A label for the image, repeatable.", metavar="K=V"),
    Opt(("--network",), VALUE, "Network of RUN steps.", type=("default", "none", "host"), default="default"),
    Opt(("--secret", "secrets"), MULTIPLE,
        "id=ID[,src=FILE|env=VAR]: lent to RUN --mount=type=secret, never stored."),
    Opt(("--ssh", "ssh"), MULTIPLE, "default|ID=SOCKET: an ssh-agent for RUN --mount=type=ssh."),
    Opt(("--compression",), VALUE, "How new layers are stored (uncompressed, as Docker keeps them; push compresses).",
        type=("gzip", "zstd", "uncompressed"), default="uncompressed"),
    Opt(("-o", "--output", "outputs"), MULTIPLE, "type=oci|docker,dest=FILE"),
    Opt(("--push",), FLAG, "Push the tags after building."),
    Opt(("--cache-from", "cache_from"), MULTIPLE,
        "type=registry,ref=REF | type=local,src=DIR | REF (a plain image): steps to reuse."),
    Opt(("--cache-to", "cache_to"), MULTIPLE,
        "type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=...]: export the cache."),
    Opt(("--progress",), VALUE, "Step output: plain lines, or none.", type=("auto", "plain", "quiet"),
        default="auto"),
    Opt(("-j", "--jobs"), VALUE, "Stages built at once (default: the CPU count).", type=at_least(1)),
    Opt(("-q", "--quiet"), FLAG, "Print the image ID only."),
)


def parse_build(args: list[str]) -> dict | None:
    """build_cmd's keyword arguments for `args` (what follows `build`), or None: click's to parse
    (anything unusual, and every command line build_cmd itself would answer with a usage error)."""
    from .build_core import usage_error

    kw = defaults(OPTIONS)
    rest = parse_interspersed(args, OPTIONS, kw)
    if rest is None or len(rest) != 1 or not _existing(rest[0]):
        return None
    kw["context"] = rest[0]
    return None if usage_error(kw) is not None else kw


def _existing(path: str) -> bool:
    """A CONTEXT click's Path(exists=True) takes as it is: there and readable."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return os.access(path, os.R_OK)
