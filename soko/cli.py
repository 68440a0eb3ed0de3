"""The `soko` command: global options, lazy subcommands, one-line errors.

Subcommands live in soko/commands/ and are imported only when invoked, so
`soko --help` and quick commands do not pay for aiohttp, the builder or the
runtime.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from .context import context
from .entry import collect_garbage, die_of_sigpipe, fail, leave

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
    "builder": "buildcache:builder_group",
    "push": "transfer:push_cmd",
    "pull": "transfer:pull_cmd",
    "copy": "transfer:copy_cmd",
    "login": "transfer:login_cmd",
    "logout": "transfer:logout_cmd",
    "search": "registry:search_cmd",
    "registry": "registry:registry_group",
    "system": "system:system_cmd",
    "image": "system:image_cmd",
    "volume": "volume:volume_cmd",
    "network": "network:network_cmd",
    "version": "about:version_cmd",
    "info": "about:info_cmd",
    "completion": "about:completion_cmd",
}


class SokoGroup(click.Group):
    """A group whose `--help` shows each command's whole summary (click cuts them at 45 columns)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            rows.append((name, summary(cmd)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def summary(cmd: click.Command) -> str:
    """The command's short help, or the first line of its docstring, whole."""
    if cmd.short_help:
        return cmd.short_help
    text = (cmd.help or "").strip()
    return text.split("\n\n", 1)[0].replace("\n", " ").split("\b")[0].strip()


class LazyGroup(SokoGroup):
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
        except (Exception, KeyboardInterrupt) as exc:
            fail(exc, bool(ctx.obj and ctx.obj.debug))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local store (default: $SOKO_ROOT, /var/lib/soko as root, ~/.local/share/soko otherwise).")
@click.option("--debug", is_flag=True, help="Tracebacks and debug logs.")
@click.version_option(VERSION, "--version", prog_name="soko")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, debug: bool) -> None:
    """soko: build, store, serve, move and run container images."""
    ctx.obj = context(root, debug)


def main() -> None:
    """`soko` (entry.main decides whether click is needed at all)."""
    from .entry import main as entry_main

    entry_main()


def click_main():
    """click's standalone handling, plus one rule: a closed pipe on stdout ends soko as SIGPIPE
    ends `cat` (click would exit 1 for --help); entry.ends does the rest."""
    collect_garbage()  # off during start-up (entry.main)
    try:
        return cli.main(prog_name="soko", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        leave(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        leave(1)
    except SystemExit as e:
        if e.code == 1 and type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":
            die_of_sigpipe()  # click met the closed pipe first (help text) and chose exit 1
        raise
