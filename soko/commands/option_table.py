"""Command options as data, parsed without click where a command line is plain.

A few commands (`run`, `pull`, `push`, `build`) keep their options in a table; click's command
is built from it (`click_option`) and a plain command line is read from the same table by
`parse_options`, which understands the subset of click's syntax that a script or a user types (`--opt VALUE`,
`--opt=VALUE`, `-o VALUE`, `-it`) and gives the command the keyword arguments click would. For
anything else (help, an unknown option, a value click would reject or convert, `--`, completion)
the parsers return None and click parses the command line, so usage, help and errors stay
exactly click's. soko/entry.py decides; tests/cli/test_run_fastpath.py,
tests/cli/test_transfer_fastpath.py and tests/cli/test_build_parse.py hold the parsers beside
click.
"""
from __future__ import annotations

import os
import sys

FLAG, VALUE, MULTIPLE = "flag", "value", "multiple"


class Opt:
    """One option: click's declarations (`decls`, with the parameter name when click would
    not derive it) and what the value is."""

    __slots__ = ("decls", "kind", "type", "default", "help", "metavar", "dest", "eager")

    def __init__(self, decls: tuple[str, ...], kind: str, help: str, type: object = str,
                 default: object = None, metavar: str | None = None, eager: bool = False) -> None:
        self.decls, self.kind, self.help = decls, kind, help
        # type: str, int, a range of ints, "file" or a tuple of choices
        self.type, self.default, self.metavar, self.eager = type, default, metavar, eager
        names = [d for d in decls if not d.startswith("-")]
        longs = [d for d in decls if d.startswith("--")]
        self.dest = names[0] if names else (longs or list(decls))[0].lstrip("-").replace("-", "_")


GLOBAL_ROOT, GLOBAL_DEBUG = "--root", "--debug"


def split_globals(argv: list[str]) -> tuple[str | None, bool, list[str]] | None:
    """`[--root DIR] [--debug] COMMAND ARGS...` as (root, debug, [COMMAND, ARGS...]), or None
    when click must read the global options."""
    root: str | None = None
    debug = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
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
    return root, debug, argv[i:]


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


def defaults(options: tuple[Opt, ...]) -> dict:
    return {o.dest: (False if o.kind == FLAG else () if o.kind == MULTIPLE else o.default) for o in options}


def at_least(n: int) -> range:
    """An Opt type: an int of at least `n`, with no upper bound (click's IntRange(min=n))."""
    return range(n, sys.maxsize)


def parse_interspersed(args: list[str], options: tuple[Opt, ...], kw: dict) -> list[str] | None:
    """Read `args` into `kw` as a command that takes options among its arguments does (click's
    default); the arguments that are not options, or None (see the module's docstring)."""
    rest: list[str] = []
    while True:
        i = parse_options(args, options, kw)
        if i is None or i == len(args):
            return None if i is None else rest
        rest.append(args[i])
        args = args[i + 1:]


def parse_options(args: list[str], options: tuple[Opt, ...], kw: dict) -> int | None:
    """Read the options at the head of `args` into `kw`; the index of the first argument that is
    not one, or None (see the module's docstring)."""
    by_name: dict[str, Opt] = {d: o for o in options for d in o.decls if d.startswith("-")}
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
    return i


def _take(kw: dict, opt: Opt, value: str) -> bool:
    """Store `value` as click would; False when only click may judge it."""
    if opt.kind == FLAG:
        kw[opt.dest] = True
    elif opt.type == "file":
        return False  # click.Path's checks (a directory, unreadable) are click's to word
    elif opt.type is int or isinstance(opt.type, range):
        try:
            n = int(value)
        except ValueError:
            return False
        if isinstance(opt.type, range) and n not in opt.type:
            return False
        kw[opt.dest] = n
    elif isinstance(opt.type, tuple) and value not in opt.type:
        return False
    elif opt.kind == MULTIPLE:
        kw[opt.dest] = (*kw[opt.dest], value)
    else:
        kw[opt.dest] = value
    return True


def click_option(o: Opt):
    """The click option `o` describes (for the modules that build click commands)."""
    import click

    kwargs: dict = {"help": o.help}
    if o.eager:
        kwargs["is_eager"] = True
    if o.kind == FLAG:
        kwargs["is_flag"] = True
    else:
        if o.kind == MULTIPLE:
            kwargs["multiple"] = True
        if o.type == "file":
            kwargs["type"] = click.Path(dir_okay=False)
        elif isinstance(o.type, tuple):
            kwargs["type"] = click.Choice(list(o.type))
        elif isinstance(o.type, range):
            kwargs["type"] = click.IntRange(o.type.start, None if o.type.stop == sys.maxsize else o.type.stop - 1)
        elif o.type is not str:
            kwargs["type"] = o.type
        if o.kind != MULTIPLE:
            kwargs["default"] = o.default
        if o.metavar:
            kwargs["metavar"] = o.metavar
    return click.option(*o.decls, **kwargs)


def click_options(options):
    """A decorator giving a click command every option of the table `options`, in its order."""
    def wrap(f):
        for o in reversed(options):
            f = click_option(o)(f)
        return f
    return wrap
