"""The `soko` command: global options, lazy subcommands, one-line errors.

Subcommands live in soko/commands/ and are imported only when invoked, so
`soko --help` and quick commands do not pay for aiohttp, the builder or the
runtime.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import is_known, one_line

VERSION = "0.1.0"

# command name -> "module:attribute" under soko.commands
COMMANDS: dict[str, str] = {
    "import": "images:import_cmd",
    "save": "archives:save_cmd",
    "load": "archives:load_cmd",
    "images": "images:images_cmd",
    "history": "images:history_cmd",
    "inspect": "inspect:inspect_cmd",
    "tag": "images:tag_cmd",
    "rmi": "images:rmi_cmd",
    "gc": "gc:gc_cmd",
    "run": "run:run_cmd",
    "create": "run:create_cmd",
    "ps": "containers:ps_cmd",
    "logs": "containers:logs_cmd",
    "start": "containers:start_cmd",
    "stop": "containers:stop_cmd",
    "restart": "containers:restart_cmd",
    "kill": "containers:kill_cmd",
    "rm": "containers:rm_cmd",
    "wait": "containers:wait_cmd",
    "port": "containers:port_cmd",
    "top": "containers:top_cmd",
    "diff": "containers:diff_cmd",
    "container": "containers:container_cmd",
    "exec": "exec:exec_cmd",
    "cp": "cp:cp_cmd",
    "commit": "commit:commit_cmd",
    "serve": "serve:serve_cmd",
    "build": "build:build_cmd",
    "push": "transfer:push_cmd",
    "pull": "transfer:pull_cmd",
    "copy": "transfer:copy_cmd",
    "login": "transfer:login_cmd",
    "logout": "transfer:logout_cmd",
}


def default_root() -> Path:
    env = os.environ.get("SOKO_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/soko")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "soko"


@dataclass
class Context:
    root: Path
    debug: bool

    def image_store(self):
        from storage.images import ImageStore

        return ImageStore(self.root)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"soko.commands.{module}"), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # the one place errors become messages
            debug = bool(ctx.obj and ctx.obj.debug)
            if debug:
                raise
            if is_known(exc) or isinstance(exc, OSError):
                click.echo(f"soko: {one_line(exc)}", err=True)
            else:
                click.echo(f"soko: internal error: {type(exc).__name__}: {one_line(exc)} "
                           "(run with --debug for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local store (default: $SOKO_ROOT, /var/lib/soko as root, ~/.local/share/soko otherwise).")
@click.option("--debug", is_flag=True, help="Tracebacks and debug logs.")
@click.version_option(VERSION, "--version", prog_name="soko")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, debug: bool) -> None:
    """soko: build, store, serve, move and run container images."""
    ctx.obj = Context(root or default_root(), debug)
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def main() -> None:
    cli(prog_name="soko")
