"""Image -> running process.

Public API (imports are lazy, so `import runtime` costs nothing):

Running a container (`soko run`)::

    runtime.run(store: storage.images.ImageStore, image: str | storage.images.Image,
                options: runtime.RunOptions, *, stdin: int | None = 0, stdout: int = 1,
                stderr: int = 2, on_output: Callable[[bytes], None] | None = None,
                on_event: Callable[[str, str], None] | None = None,
                snapshotter: str | None = None) -> int

    Returns the container's exit status (128+N when killed by signal N).
    Raises runtime.ContainerError (with `.status`: 125 soko's own error,
    126 not executable, 127 not found) for anything that stops the
    container from starting; the CLI prints str(e) and exits with e.status.
    stdin is only attached with options.interactive (else /dev/null);
    stdout/stderr are file descriptors passed straight to the container,
    unless on_output is given (then both are captured and handed over).
    on_event(kind, message) reports "created" (the new container's ID),
    "unpack" (a layer being unpacked), "fallback" (overlayfs unavailable:
    copying layers instead), "swept" (leftovers of a killed run cleaned up).
    A container with a restart policy or a health check runs under a monitor
    and this call attaches to it; with options.detach it returns 0 at once. snapshotter: "auto" (default,
    also $SOKO_SNAPSHOTTER), "overlay" or "copy".

    runtime.RunOptions: command, entrypoint, rm, interactive, tty, name, env,
    env_files, user, workdir, hostname, volumes, tmpfs, read_only, network
    ("none" | "host" | "default", which is host until bridge networking
    exists), memory (bytes), cpus, pids_limit, runtime ("builtin" | "runc" |
    "crun"), security_opt (Docker's --security-opt: seccomp=unconfined or
    seccomp=PROFILE.json; Docker's default seccomp profile otherwise). Text parsers for the CLI: runtime.parse_size("32m"),
    runtime.parse_cpus("1.5"), runtime.parse_env_file(path) (RunOptions.env_files
    takes paths and reads them itself), and RunOptions.validate().

Containers as objects (`soko create/start/stop/...`)::

    c = runtime.create.create(store, image, options)   # locked by this process; then either
    runtime.runner.foreground(c, stdin=, stdout=, stderr=)  # run here, wait, release (as run does)
    c.start()                                           # or detached, under a monitor process
    c = runtime.container.Container.get(store, "name or ID prefix")
    c.stop(timeout), c.kill(sig), c.wait(), c.delete(force), c.exec(argv, ...), c.pids(),
    c.changes() (the change as an overlay upper dir), c.paused(), c.refresh() (the State)
    runtime.container.Container.all(store), runtime.logfile (json-file logs),
    runtime.fsaccess (cp), runtime.changes.changes (diff)

    RunOptions adds detach, restart, labels, publish/publish_all (parsed, kept for
    networking), health_cmd/interval/timeout/start_period/retries, no_healthcheck,
    stop_signal, stop_timeout.

For the builder::

    runtime.build.run_step(store, diff_ids: list[str] (bottom first), upper: Path, work: Path,
                           argv: list[str], env: list[str], user: str | None, workdir: str,
                           network: str = "host", mounts=(), on_output=None, *,
                           on_event=None, hostname=None, snapshotter=None) -> int

    Runs argv on the layers plus `upper` (an empty directory the caller
    owns, on the store's filesystem; `work` likewise, overlay scratch).
    Afterwards `upper` holds the step's change in overlayfs form, for
    storage.layers.write_layer_from_overlay (the mount points it needed are
    in the container's init layer, never in `upper`). mounts: spec.Mount
    objects or (source, target[, read_only]) tuples.

    runtime.build.read_file(store, diff_ids, path, limit=16 MiB) -> bytes | None
    runtime.build.resolve_user(store, diff_ids, "user[:group]") -> users.ExecUser
    runtime.build.layer_view(store, diff_ids) -> LayerView (.read_file, .stat, .listdir)

    All resolve symlinks inside the image, never on the host.

Housekeeping::

    runtime.container.sweep(store, on_event=None) -> int
    runtime.snapshots.prune(store, keep=(), on_event=None, dry_run=False) -> list[str]  (for `soko gc`)
    runtime.snapshots.chain_ids(diff_ids) -> list[str]
    runtime.snapholds.holding()  (a block: the snapshots prepared within stay held, across
        processes, from takes and gc until it ends; a build runs in one)

Tests and benchmarks use the same functions through `python -m runtime run
--root STORE [docker run options] IMAGE [COMMAND...]`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ContainerError
    from .options import RunOptions, parse_cpus, parse_env_file, parse_size
    from .runner import run

_LAZY = {
    "run": ("runner", "run"),
    "RunOptions": ("options", "RunOptions"),
    "parse_size": ("options", "parse_size"),
    "parse_cpus": ("options", "parse_cpus"),
    "parse_env_file": ("options", "parse_env_file"),
    "ContainerError": ("errors", "ContainerError"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
