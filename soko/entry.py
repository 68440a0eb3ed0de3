"""The `soko` command's entry point, and how every command ends.

click and soko's command tree cost ~15 ms of CPU, a fifth of a whole `soko run --rm`; a `run`,
`pull`, `push` or `build` with plain arguments (soko/commands/option_table.py decides which) is
parsed from the same option table click's command is built from and run without importing click.
Every other command line, and every unusual one (help, a bad value, completion), goes to click
(soko/cli.py), so usage, help and errors stay click's. This module imports next to nothing
before `main` runs (see there why).
"""
from __future__ import annotations

import errno
import gc
import os
import sys
from collections.abc import Callable
from types import ModuleType


def echo(text: str, err: bool = False) -> None:
    """A line on stdout (stderr with `err`) as click.echo writes it: no colour codes where it is
    no terminal, flushed at once."""
    stream = sys.stderr if err else sys.stdout
    if "\033" in text and not stream.isatty():
        import re

        text = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)
    stream.write(text + "\n")
    stream.flush()


def echo_err(text: str) -> None:
    """A line on stderr as click.echo(err=True) writes it."""
    echo(text, err=True)


def fail(exc: BaseException, debug: bool) -> None:
    """The one place errors become messages: one line and status 1 (130 after ^C); an error
    that is no component's own is called an internal error; --debug shows the traceback."""
    if isinstance(exc, KeyboardInterrupt):
        sys.exit(130)
    if closed_pipe(exc):
        die_of_sigpipe()
    if debug:
        raise exc
    from .errors import is_known, one_line

    if is_known(exc) or isinstance(exc, OSError):
        echo_err(f"soko: {one_line(exc)}")
    else:
        echo_err(f"soko: internal error: {type(exc).__name__}: {one_line(exc)} "
                 "(run with --debug for the traceback)")
    sys.exit(1)


def main() -> None:
    """`soko`: a plain `run` straight away, anything else through click.

    Start-up makes ~100k objects that live until the end and hardly any garbage cycles, yet the
    cyclic collector ran ~28 times over them during a `run` (3-4 ms): it is off until a command
    does its own work, enabled before click dispatches (cli.click_main) and, for a fast `run`,
    once the container is created (run_core.run)."""
    gc.disable()
    plain = None if "_SOKO_COMPLETE" in os.environ else _plain(sys.argv[1:])  # (click's shell completion)
    if plain is None:
        from .cli import click_main

        ends(click_main)
        return
    ends(plain)


def _plain(argv: list[str]) -> Callable[[], object] | None:
    """The command a plain `run`, `pull`, `push` or `build` command line asks for, ready to call;
    None for click to parse `argv`."""
    from .commands.option_table import split_globals

    got = split_globals(argv)
    if got is None:
        return None
    root, debug, (name, *args) = got
    if name == "run":
        from .commands.run_options import parse_run

        kw = parse_run(args)
        return None if kw is None else lambda: _run(root, debug, kw)
    if name in ("pull", "push"):
        from .commands.transfer_options import PARSERS

        kw = PARSERS[name](args)
        return None if kw is None else lambda: _transfer(name, root, debug, kw)
    if name == "build":
        from .commands.build_options import parse_build

        kw = parse_build(args)
        return None if kw is None else lambda: _build(root, debug, kw)
    return None


def collect_garbage() -> None:
    """The cyclic collector back on, for what a command does after start-up; what start-up made
    lives until the end, so it is frozen out of every later collection."""
    gc.freeze()
    gc.enable()


# Standard modules a `run`, `pull`, `push` or `build` imports only through others that never use
# them on its way: dataclasses imports inspect (with ast, dis and tokenize: ~4 ms) just to write a
# docstring for a class without one (soko's have theirs); urllib.parse (for pathlib) imports
# ipaddress for bracketed URL hosts; shutil imports bz2 and lzma to know which archives it could
# make; logging (for dockerfile_parse, when a build parses its Dockerfile) imports traceback, with
# linecache, tokenize and textwrap (~2 ms), to format exceptions it is given.
ON_FIRST_USE = ("inspect", "ipaddress", "bz2", "lzma", "traceback")


class _OnFirstUse(ModuleType):
    """Stands in sys.modules for a standard module until one of its attributes is asked for,
    then imports it and answers from it (and from then on holds its attributes itself)."""

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        import importlib

        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def import_on_first_use(names: tuple[str, ...] = ON_FIRST_USE) -> None:
    """Let `import NAME` give a stand-in (see _OnFirstUse) for each module not imported yet."""
    from importlib.util import find_spec

    for name in names:
        if name in sys.modules:
            continue
        spec = find_spec(name)
        if spec is None:
            continue
        stand_in = _OnFirstUse(name)
        stand_in.__spec__ = spec  # what `import` checks of a module it finds already there
        sys.modules[name] = stand_in


def _run(root: str | None, debug: bool, kw: dict) -> None:
    import_on_first_use()
    from .commands.run_core import run

    _in_context(root, debug, lambda obj: run(obj, kw.pop("detach"), kw))


def _transfer(name: str, root: str | None, debug: bool, kw: dict) -> None:
    collect_garbage()  # as click_main does: a pull or push makes its garbage after start-up
    import_on_first_use()
    from .commands import transfer_core

    _in_context(root, debug, lambda obj: transfer_core.run(obj, name, kw))


def _build(root: str | None, debug: bool, kw: dict) -> None:
    collect_garbage()  # as click_main does
    import_on_first_use()
    from .commands import build_core

    _in_context(root, debug, lambda obj: build_core.run(obj, kw))


def _in_context(root: str | None, debug: bool, command: Callable[[object], object]) -> None:
    """`command(obj)` for the context the global options make (soko/context.py), its errors
    ended as click's command tree ends them (`fail`)."""
    from pathlib import Path

    from .context import context

    obj = context(Path(root) if root is not None else None, debug)
    try:
        command(obj)
    except (Exception, KeyboardInterrupt) as exc:
        fail(exc, obj.debug)


def ends(command: Callable[[], object]) -> None:
    """Run `command` and end as every soko command does: a closed pipe on stdout ends soko as
    SIGPIPE ends `cat` (Python would print a BrokenPipeError at exit), and a finished command
    leaves without the interpreter's teardown (`leave`)."""
    try:
        rv = command()
        sys.stdout.flush()  # here, where a closed pipe can still be handled
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            try:
                sys.stdout.flush()
            except Exception as exc:  # noqa: BLE001 - only a closed pipe is expected here
                if closed_pipe(exc):
                    die_of_sigpipe()
                raise
            leave(e.code or 0)
        raise
    except Exception as exc:
        if closed_pipe(exc):
            die_of_sigpipe()
        raise
    leave(rv if isinstance(rv, int) else 0)


def closed_pipe(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is a write to a pipe whose reader went away."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def die_of_sigpipe() -> None:
    """End as `cat` or `yes` do when the reader of their output is gone (`soko images | head -1`):
    quietly, killed by SIGPIPE (status 141 in a shell). Clean-up (`finally` blocks, context
    managers) has already run while the error travelled up to here."""
    import signal

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
    except (OSError, ValueError):
        pass
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # not reached


def leave(code: int) -> None:
    """Exit with `code` as a normal exit would, less the interpreter's teardown.

    Other threads are waited for and atexit handlers run (log handlers, tempfile's finalizers),
    then the process ends without freeing every object and module one by one: that teardown
    took 7-8 ms after `run` and 0.1-0.3 s after a push or a pull (aiohttp, asyncio) on this
    machine, for memory the kernel reclaims at once anyway."""
    import atexit
    import threading

    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()  # what Py_Finalize would run first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
