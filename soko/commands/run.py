"""`soko run` and `soko create` as click commands, built from the option table in run_options.py;
what they do is run_core.py's (a plain `soko run` gets there without click: soko/entry.py)."""
from __future__ import annotations

import click

from . import run_core
from .option_table import click_option as _click_option, click_options
from .run_options import DETACH, OPTIONS


def _options(f):
    f = click.argument("image")(click.argument("command", nargs=-1, type=click.UNPROCESSED)(f))
    return click_options(OPTIONS)(f)


@click.command("run", context_settings={"allow_interspersed_args": False})
@_click_option(DETACH)
@_options
@click.pass_context
def run_cmd(ctx: click.Context, detach: bool, **kw) -> None:
    """Run a command in a new container."""
    run_core.run(ctx.obj, detach, kw)


@click.command("create", context_settings={"allow_interspersed_args": False})
@_options
@click.pass_context
def create_cmd(ctx: click.Context, **kw) -> None:
    """Create a new container without starting it; prints its ID."""
    run_core.create(ctx.obj, kw)
