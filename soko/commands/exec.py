"""`soko exec`: another process in a running container, with its confinement; exits with its status."""
from __future__ import annotations

import os
import sys

import click

from ..errors import is_known, one_line


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.option("-d", "--detach", is_flag=True, help="Run in the background.")
@click.option("-e", "--env", multiple=True, help="K=V, or K to take it from this environment.")
@click.option("-u", "--user", default=None, help="USER[:GROUP] (names or ids, from the container).")
@click.option("-w", "--workdir", default=None, help="Working directory in the container.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx, interactive, tty, detach, env, user, workdir, container, command) -> None:
    """Run a command in a running container."""
    try:
        from runtime.options import parse_env_entry
        from runtime.waiting import Forwarder, wait

        from .containers import get

        c = get(ctx, container)
        entries = [e for e in (parse_env_entry(x) for x in env) if e is not None]
        with Forwarder() as fwd:
            task = c.exec(list(command), env=entries, user=user, workdir=workdir, tty=tty,
                          stdin=0 if interactive else None, detach=detach)
            if detach:
                os.waitpid(task.helper, 0)
                return
            fwd.started(task.pid)
            if task.master is not None:
                from runtime.tty import Terminal

                with Terminal(task.master, 0 if interactive else None, 1, None, task.helper) as term:
                    status = term.pump(fwd)
            else:
                status = wait(task.helper, fwd)
    except Exception as exc:
        if ctx.obj.debug or not (is_known(exc) or isinstance(exc, OSError)):
            raise
        click.echo(f"soko: {one_line(exc)}", err=True)
        sys.exit(getattr(exc, "status", 126))
    sys.exit(os.waitstatus_to_exitcode(status))
