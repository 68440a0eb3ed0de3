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


def is_known(exc: BaseException) -> bool:
    return any(cls.__module__ in ERROR_MODULES for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
