"""The `soko` command: global options, lazy subcommands, one-line errors.

Subcommands live in soko/commands/ and are imported only when invoked, so
`soko --help` and quick commands do not pay for aiohttp, the builder or the
runtime.
"""
from __future__ import annotations

import errno
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
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # the one place errors become messages
            if closed_pipe(exc):
                die_of_sigpipe()
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


def main() -> None:
    """click's standalone handling, plus two rules: a closed pipe on stdout ends soko as SIGPIPE
    ends `cat` (click would exit 1 for --help, Python would print a BrokenPipeError at exit), and
    a finished command leaves without the interpreter's teardown (`leave`)."""
    try:
        rv = cli.main(prog_name="soko", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
    except click.ClickException as e:
        e.show()
        leave(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        leave(1)
    except SystemExit as e:
        if e.code == 1 and type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":
            die_of_sigpipe()  # click met the closed pipe first (help text) and chose exit 1
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
