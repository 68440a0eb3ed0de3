"""Moving images: push, pull, copy, login, logout."""
from __future__ import annotations

import sys

import click

from . import transfer_core
from .option_table import click_options
from .transfer_core import client_options, with_progress
from .transfer_options import PULL_OPTIONS, PUSH_OPTIONS


def _check_level(ctx, param, level):
    from storage.compression import check_level
    from storage.errors import StorageError

    try:
        return check_level(ctx.params.get("compression", "gzip"), level)
    except StorageError as e:
        raise click.BadParameter(str(e), ctx, param) from None



@click.command("push")
@click_options(PUSH_OPTIONS)
@click.option("--compression-level", type=int, default=None, callback=_check_level,
              help="gzip 0-9 (default 6), zstd 1-22 (default: level 2's search with a 4 MiB window); "
                   "used when a layer is first compressed.")
@click.argument("image")
@click.argument("dest", required=False)
@click.pass_context
def push_cmd(ctx, **kw) -> None:
    """Upload an image to a registry (DEST defaults to IMAGE's own reference)."""
    transfer_core.run(ctx.obj, "push", kw)


@click.command("pull")
@click_options(PULL_OPTIONS)
@click.argument("ref")
@click.pass_context
def pull_cmd(ctx, **kw) -> None:
    """Download an image into the local store."""
    transfer_core.run(ctx.obj, "pull", kw)


@click.command("copy")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary line.")
@click.argument("src")
@click.argument("dst")
@click.pass_context
def copy_cmd(ctx, insecure, quiet, src, dst) -> None:
    """Copy between docker://REF, oci-archive:FILE, docker-archive:FILE and soko:REF."""
    from registry.client import copy

    store = ctx.obj.image_store() if (src.startswith("soko:") or dst.startswith("soko:")) else None
    result = with_progress(quiet, lambda p: copy(src, dst, client_options(insecure), p, store))
    if not quiet:
        click.echo(f"Copied {result.source} to {result.destination} ({result.digest})")


@click.command("login")
@click.option("-u", "--username", default=None, help="User name (asked for when missing).")
@click.option("-p", "--password", default=None, help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@click.argument("registry")
@click.pass_context
def login_cmd(ctx, username, password, password_stdin, insecure, registry) -> None:
    """Check credentials against REGISTRY and store them in ~/.docker/config.json."""
    from registry.client import login

    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    login(registry, username, password, client_options(insecure))
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("registry")
@click.pass_context
def logout_cmd(ctx, registry) -> None:
    """Forget the credentials of REGISTRY."""
    from registry.client import logout

    if logout(registry):
        click.echo(f"Removing login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")
