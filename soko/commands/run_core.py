"""What `soko run` and `soko create` do once their options are parsed, without click: the
click commands (run.py) and the fast entry (soko/entry.py) share it.

run exits with the container's own status (125 for soko's own errors). `run -d` prints the new
container's 64-hex ID once its process runs, as Docker does. An image that is not in the store
is pulled first (`--pull missing`, Docker's default), through registry.client: the runtime never
talks to a registry itself.
"""
from __future__ import annotations

import sys

from ..context import Context
from ..entry import collect_garbage, echo_err
from ..errors import is_known, one_line


def _run_options(kw: dict, detach: bool):
    import runtime

    return runtime.RunOptions(
        command=list(kw["command"]), entrypoint=kw["entrypoint"], rm=kw["rm"], interactive=kw["interactive"],
        tty=kw["tty"], name=kw["name"], env=list(kw["env"]), env_files=list(kw["env_file"]), user=kw["user"],
        workdir=kw["workdir"], hostname=kw["hostname"], volumes=list(kw["volumes"]), tmpfs=list(kw["tmpfs"]),
        read_only=kw["read_only"], network=kw["network"], network_aliases=list(kw["network_aliases"]),
        memory=runtime.parse_size(kw["memory"]) if kw["memory"] else None,
        cpus=runtime.parse_cpus(kw["cpus"]) if kw["cpus"] else None, pids_limit=kw["pids_limit"],
        runtime=kw["runtime_name"], security_opt=list(kw["security_opt"]), detach=detach,
        restart=kw["restart"], labels=list(kw["labels"]), publish=list(kw["publish"]),
        publish_all=kw["publish_all"], health_cmd=kw["health_cmd"], health_interval=kw["health_interval"],
        health_timeout=kw["health_timeout"], health_start_period=kw["health_start_period"],
        health_retries=kw["health_retries"], no_healthcheck=kw["no_healthcheck"],
        stop_signal=kw["stop_signal"], stop_timeout=kw["stop_timeout"])


def _check_network(opts) -> None:
    if (opts.publish or opts.publish_all) and opts.network == "host":
        echo_err("WARNING: Published ports are discarded when using host network mode")
        opts.publish, opts.publish_all = [], False


def ensure_image(store, image: str, policy: str) -> None:
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

        echo_err(f"Unable to find image '{references.parse(image).familiar()}' locally")
    from registry.client import pull

    from ..progress import PlainProgress

    result = pull(store, image, progress=PlainProgress(sys.stderr))
    echo_err(f"Digest: {result.digest}")
    echo_err(f"Status: Downloaded newer image for {result.reference}")


def _event_printer(obj: Context):
    def event(kind: str, message: str) -> None:
        if kind == "fallback" or (obj.debug and kind != "created"):
            echo_err(f"soko: {message}")
    return event


def _fail(obj: Context, exc: Exception) -> None:
    if obj.debug or not (is_known(exc) or isinstance(exc, OSError)):
        raise exc
    echo_err(f"soko: {one_line(exc)}")
    sys.exit(getattr(exc, "status", 125))


def _prepared(obj: Context, kw: dict, detach: bool):
    """(store, options) once the options are valid and the image is in the store."""
    opts = _run_options(kw, detach)
    _check_network(opts)
    opts.validate()
    store = obj.image_store()
    ensure_image(store, kw["image"], kw["pull"])
    return store, opts


def run(obj: Context, detach: bool, kw: dict) -> None:
    """`soko run`: ends the process with the container's status (its ID printed first with -d)."""
    try:
        import runtime

        store, opts = _prepared(obj, kw, detach)
        created: list[str] = []
        printer = _event_printer(obj)

        def event(kind: str, message: str) -> None:
            if kind == "created":
                created.append(message)
                collect_garbage()  # off during start-up (entry.main); the container may run for hours
            printer(kind, message)

        status = runtime.run(store, kw["image"], opts, on_event=event)
        if detach:
            print(created[0], flush=True)  # once its process runs, as Docker prints it
    except Exception as exc:
        _fail(obj, exc)
    sys.exit(status)


def create(obj: Context, kw: dict) -> None:
    """`soko create`: prints the new container's ID."""
    try:
        from runtime.create import create

        store, opts = _prepared(obj, kw, True)
        c = create(store, kw["image"], opts, on_event=_event_printer(obj))
        c.cdir.unlock()
        print(c.id, flush=True)
    except Exception as exc:
        _fail(obj, exc)
