"""`soko run`: exits with the container's own status (125 for soko's own errors)."""
from __future__ import annotations

import sys

import click

from ..errors import is_known, one_line


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option("--rm", is_flag=True, help="Remove the container when it exits.")
@click.option("-d", "--detach", is_flag=True, help="Run in the background (not yet supported).")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.option("--name", default=None, help="A name for the container.")
@click.option("-e", "--env", multiple=True, help="K=V, or K to take it from this environment.")
@click.option("--env-file", multiple=True, type=click.Path(dir_okay=False),
              help="Read K=V lines from a file, repeatable.")
@click.option("-u", "--user", default=None, help="USER[:GROUP] (names or ids).")
@click.option("-w", "--workdir", default=None, help="Working directory inside the container.")
@click.option("-h", "--hostname", default=None, help="The container's host name.")
@click.option("--entrypoint", default=None, help="Replace the image's ENTRYPOINT.")
@click.option("-v", "--volume", "volumes", multiple=True, help="SRC:DST[:ro] or NAME:DST.")
@click.option("--tmpfs", multiple=True, metavar="DIR[:OPTS]", help="Mount a tmpfs at DIR, repeatable.")
@click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
@click.option("-p", "--publish", multiple=True, help="Published ports (needs bridge networking).")
@click.option("--network", default="default", help="none or host (bridge comes later).")
@click.option("-m", "--memory", default=None, help="Memory limit, e.g. 32m.")
@click.option("--cpus", default=None, help="CPU limit, e.g. 1.5.")
@click.option("--pids-limit", type=int, default=None, help="At most this many processes.")
@click.option("--runtime", "runtime_name", type=click.Choice(["builtin", "runc", "crun"]), default="builtin",
              help="The OCI runtime: soko's own, or runc/crun.")
@click.option("--security-opt", "security_opt", multiple=True,
              help="seccomp=unconfined or seccomp=PROFILE.json (Docker's profile format).")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_cmd(ctx: click.Context, rm, detach, interactive, tty, name, env, env_file, user, workdir, hostname,
            entrypoint, volumes, tmpfs, read_only, publish, network, memory, cpus, pids_limit, runtime_name,
            security_opt, image, command) -> None:
    """Run a command in a new container."""
    try:
        if detach or publish or network == "bridge":
            from ..errors import SokoError

            raise SokoError("detached containers, bridge networking and -p are not supported yet")
        import runtime

        opts = runtime.RunOptions(
            command=list(command), entrypoint=entrypoint, rm=rm, interactive=interactive, tty=tty,
            name=name, env=list(env), env_files=list(env_file), user=user, workdir=workdir,
            hostname=hostname, volumes=list(volumes), tmpfs=list(tmpfs), read_only=read_only,
            network=network, memory=runtime.parse_size(memory) if memory else None,
            cpus=runtime.parse_cpus(cpus) if cpus else None, pids_limit=pids_limit, runtime=runtime_name,
            security_opt=list(security_opt))
        opts.validate()
        store = ctx.obj.image_store()

        def event(kind: str, message: str) -> None:
            if kind == "fallback" or ctx.obj.debug:
                click.echo(f"soko: {message}", err=True)

        status = runtime.run(store, image, opts, on_event=event)
    except Exception as exc:
        if ctx.obj.debug or not (is_known(exc) or isinstance(exc, OSError)):
            raise
        click.echo(f"soko: {one_line(exc)}", err=True)
        sys.exit(getattr(exc, "status", 125))
    sys.exit(status)
