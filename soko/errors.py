"""Turning component errors into the one-line messages CLI.md promises.

Each package has one exception hierarchy; soko recognizes them by the module
that defines their base, so it never has to import a heavy package just to
catch its errors.
"""
from __future__ import annotations

ERROR_MODULES = ("storage.errors", "registry.errors", "registry.client.errors", "runtime.errors",
                 "builder.errors", "soko.errors")


class SokoError(Exception):
    """An error of the command line itself (bad combination of options, ...)."""


class UsageError(SokoError):
    """A command line a click-free command core refuses as click's usage errors do: its click
    command shows it as click.UsageError (usage, then the message, status 2); a plain command line
    that would meet one is left to click (soko/entry.py)."""


def is_known(exc: BaseException) -> bool:
    return any(cls.__module__ in ERROR_MODULES for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def for_each(debug: bool, items, fn, echo: bool = True) -> None:
    """`fn(item)` for every item, as Docker's verbs over several names do: the item (or what `fn`
    returns) on success, a one-line message for a known failure and on to the next, exit status 1
    at the end if any failed. Unknown errors (and every error with --debug) go up as they are."""
    import sys

    import click

    failed = False
    for item in items:
        try:
            out = fn(item)
            if echo:
                click.echo(item if out is None else out)
        except Exception as exc:
            if debug or not (is_known(exc) or isinstance(exc, OSError)):
                raise
            click.echo(f"soko: {one_line(exc)}", err=True)
            failed = True
    if failed:
        sys.exit(1)
