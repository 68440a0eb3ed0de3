"""`soko run` and `soko create`: run exits with the container's own status (125 for soko's own errors).

`run -d` prints the new container's 64-hex ID once its process runs, as Docker
does. An image that is not in the store is pulled first (`--pull missing`,
Docker's default), through registry.client: the runtime never talks to a
registry itself.
"""
from __future__ import annotations

import sys

import click

from ..errors import SokoError, is_known, one_line


def _options(f):
    opts = [
        click.option("--rm", is_flag=True, help="Remove the container when it exits."),
        click.option("-i", "--interactive", is_flag=True, help="Keep stdin open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal."),
        click.option("--name", default=None, help="A name for the container."),
        click.option("-e", "--env", multiple=True, help="K=V, or K to take it from this environment."),
        click.option("--env-file", multiple=True, type=click.Path(dir_okay=False),
                     help="Read K=V lines from a file, repeatable."),
        click.option("-u", "--user", default=None, help="USER[:GROUP] (names or ids)."),
        click.option("-w", "--workdir", default=None, help="Working directory inside the container."),
        click.option("-h", "--hostname", default=None, help="The container's host name (default: its short ID)."),
        click.option("--entrypoint", default=None, help="Replace the image's ENTRYPOINT."),
        click.option("-v", "--volume", "volumes", multiple=True, help="SRC:DST[:ro] or NAME:DST."),
        click.option("--tmpfs", multiple=True, metavar="DIR[:OPTS]", help="Mount a tmpfs at DIR, repeatable."),
        click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only."),
        click.option("-p", "--publish", multiple=True, help="[IP:]HOST:CONTAINER[/PROTO] (needs bridge networking)."),
        click.option("-P", "--publish-all", is_flag=True, help="Publish the image's exposed ports."),
        click.option("--network", "--net", "network", default="default", help="none or host (bridge comes later)."),
        click.option("-m", "--memory", default=None, help="Memory limit, e.g. 32m."),
        click.option("--cpus", default=None, help="CPU limit, e.g. 1.5."),
        click.option("--pids-limit", type=int, default=None, help="At most this many processes."),
        click.option("--runtime", "runtime_name", type=click.Choice(["builtin", "runc", "crun"]), default="builtin",
                     help="The OCI runtime: soko's own, or runc/crun."),
        click.option("--security-opt", "security_opt", multiple=True,
                     help="seccomp=unconfined or seccomp=PROFILE.json (Docker's profile format)."),
        click.option("-l", "--label", "labels", multiple=True, help="K=V metadata."),
        click.option("--restart", default="no", help="no, on-failure[:N], always or unless-stopped."),
        click.option("--health-cmd", default=None, help="Command to run to check health."),
        click.option("--health-interval", default=None, help="Time between checks (e.g. 30s)."),
        click.option("--health-timeout", default=None, help="Longest a check may run (e.g. 30s)."),
        click.option("--health-start-period", default=None, help="Start time before failures count."),
        click.option("--health-retries", type=int, default=None, help="Failures in a row for unhealthy."),
        click.option("--no-healthcheck", is_flag=True, help="Disable the image's HEALTHCHECK."),
        click.option("--stop-signal", default=None, help="Signal to stop the container (default SIGTERM)."),
        click.option("--stop-timeout", type=int, default=None, help="Seconds before SIGKILL on stop (default 10)."),
        click.option("--pull", type=click.Choice(["missing", "always", "never"]), default="missing",
                     help="Pull the image before running."),
        click.argument("image"),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _run_options(kw: dict, detach: bool):
    import runtime

    return runtime.RunOptions(
        command=list(kw["command"]), entrypoint=kw["entrypoint"], rm=kw["rm"], interactive=kw["interactive"],
        tty=kw["tty"], name=kw["name"], env=list(kw["env"]), env_files=list(kw["env_file"]), user=kw["user"],
        workdir=kw["workdir"], hostname=kw["hostname"], volumes=list(kw["volumes"]), tmpfs=list(kw["tmpfs"]),
        read_only=kw["read_only"], network=kw["network"],
        memory=runtime.parse_size(kw["memory"]) if kw["memory"] else None,
        cpus=runtime.parse_cpus(kw["cpus"]) if kw["cpus"] else None, pids_limit=kw["pids_limit"],
        runtime=kw["runtime_name"], security_opt=list(kw["security_opt"]), detach=detach,
        restart=kw["restart"], labels=list(kw["labels"]), publish=list(kw["publish"]),
        publish_all=kw["publish_all"], health_cmd=kw["health_cmd"], health_interval=kw["health_interval"],
        health_timeout=kw["health_timeout"], health_start_period=kw["health_start_period"],
        health_retries=kw["health_retries"], no_healthcheck=kw["no_healthcheck"],
        stop_signal=kw["stop_signal"], stop_timeout=kw["stop_timeout"])


def _check_network(opts) -> None:
    if opts.network == "bridge":
        raise SokoError("bridge networking is not supported yet (use --network host or none)")
    if opts.publish:
        if opts.network != "host":
            raise SokoError("publishing ports (-p) needs bridge networking, which soko does not have yet; "
                            "use --network host to reach the container's ports directly")
        click.echo("WARNING: Published ports are discarded when using host network mode", err=True)
        opts.publish = []


def ensure_image(ctx: click.Context, store, image: str, policy: str) -> None:
    """Docker's --pull: `missing` pulls an image the store lacks, `always` pulls every time."""
    from storage.errors import ImageNotFound

    if policy != "always":
        try:
            store.resolve(image)
            return
        except ImageNotFound:
            if policy == "never":
                raise
        from storage import references

        click.echo(f"Unable to find image '{references.parse(image).familiar()}' locally", err=True)
    from registry.client import pull

    from ..progress import PlainProgress

    result = pull(store, image, progress=PlainProgress(sys.stderr))
    click.echo(f"Digest: {result.digest}", err=True)
    click.echo(f"Status: Downloaded newer image for {result.reference}", err=True)


def _event_printer(ctx):
    def event(kind: str, message: str) -> None:
        if kind == "fallback" or (ctx.obj.debug and kind != "created"):
            click.echo(f"soko: {message}", err=True)
    return event


def _fail(ctx, exc: Exception) -> None:
    if ctx.obj.debug or not (is_known(exc) or isinstance(exc, OSError)):
        raise exc
    click.echo(f"soko: {one_line(exc)}", err=True)
    sys.exit(getattr(exc, "status", 125))


def _prepared(ctx: click.Context, kw: dict, detach: bool):
    """(store, options) once the options are valid and the image is in the store."""
    opts = _run_options(kw, detach)
    _check_network(opts)
    opts.validate()
    store = ctx.obj.image_store()
    ensure_image(ctx, store, kw["image"], kw["pull"])
    return store, opts


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@_options
@click.pass_context
def run_cmd(ctx: click.Context, detach: bool, **kw) -> None:
    """Run a command in a new container."""
    try:
        import runtime

        store, opts = _prepared(ctx, kw, detach)
        created: list[str] = []
        printer = _event_printer(ctx)

        def event(kind: str, message: str) -> None:
            if kind == "created":
                created.append(message)
            printer(kind, message)

        status = runtime.run(store, kw["image"], opts, on_event=event)
        if detach:
            click.echo(created[0])  # once its process runs, as Docker prints it
    except Exception as exc:
        _fail(ctx, exc)
    sys.exit(status)


@click.command("create", context_settings={"allow_interspersed_args": False})
@_options
@click.pass_context
def create_cmd(ctx: click.Context, **kw) -> None:
    """Create a new container without starting it; prints its ID."""
    try:
        from runtime.create import create

        store, opts = _prepared(ctx, kw, True)
        c = create(store, kw["image"], opts, on_event=_event_printer(ctx))
        c.cdir.unlock()
        click.echo(c.id)
    except Exception as exc:
        _fail(ctx, exc)
