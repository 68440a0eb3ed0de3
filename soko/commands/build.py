"""`soko build` as a click command, built from the option table in build_options.py; what it does
is build_core.py's (a plain `soko build` gets there without click: soko/entry.py)."""
from __future__ import annotations

import click

from ..errors import UsageError
from . import build_core
from .build_options import OPTIONS
from .option_table import click_options


@click.command("build")
@click_options(OPTIONS)
@click.argument("context", type=click.Path(exists=True, allow_dash=True))  # a file: the builder says why not
@click.pass_context
def build_cmd(ctx: click.Context, **kw) -> None:
    """Build an image from a Dockerfile (CONTEXT -: the Dockerfile from stdin and no context, as docker)."""
    try:
        build_core.run(ctx.obj, kw)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
