"""`soko run`: create a container and run it in the foreground, in this process.

The fast path: no monitor, no other process than the container's. The
container's output goes straight to soko's stdout/stderr when it is removed
afterwards (--rm); a kept container's output is also written to its log, so
`logs` shows it later, as Docker does. A container with a restart policy or
a health check needs someone to stay after soko: it is started under a
monitor and soko attaches to it (attach.py); so is every `run -d`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import containers, launch as launchmod, records
from .container import Container
from .create import create
from .errors import ContainerError
from .options import RunOptions

if TYPE_CHECKING:
    from storage.images import Image, ImageStore

Event = Callable[[str, str], None]
Sink = Callable[[bytes], None]


def run(store: "ImageStore", image: "str | Image", options: RunOptions, *, stdin: int | None = 0,
        stdout: int = 1, stderr: int = 2, on_output: Sink | None = None, on_event: Event | None = None,
        snapshotter: str | None = None) -> int:
    """Run `image` with `options`; returns the container's exit status (0 at once with -d)."""
    c = create(store, image, options, on_event=on_event, snapshotter=snapshotter)
    if on_event:
        on_event("created", c.id)
    if options.detach:
        c.start(on_event)
        return 0
    if needs_monitor(c):
        from .attach import attach

        rm, c.state.rm = c.state.rm, False  # removed here, once everything it logged is read
        c.cdir.save()
        try:
            return attach(c, stdin if options.interactive else None, stdout, stderr, on_output, start=True)
        finally:
            if rm:
                c.delete(force=True)
    return foreground(c, stdin=stdin if options.interactive else None, stdout=stdout, stderr=stderr,
                      on_output=on_output, on_event=on_event)


def needs_monitor(c: Container) -> bool:
    from .service import RestartPolicy, probe

    svc = c.launch.service
    return RestartPolicy.from_json(svc.get("restart")).name != "no" or probe(svc.get("healthcheck")) is not None


def foreground(c: Container, *, stdin: int | None, stdout: int, stderr: int, on_output: Sink | None = None,
               on_event: Event | None = None, before_release: Callable[[], None] | None = None) -> int:
    """Start the container (locked by this process) and wait for it; its exit status.

    Output goes to `on_output` (stdout and stderr together) or to the descriptors; a kept
    container's also to its log. The container is released afterwards (removed with --rm)."""
    from .waiting import Forwarder, kill_and_reap, wait, write_all

    launch = c.launch
    st = c.state
    tty = bool(launch.spec["process"].get("terminal"))
    log = None
    if not st.rm:
        from .logfile import LogWriter

        log = LogWriter(c.log_path)

    def sink(fd: int, stream: str) -> Sink:
        def emit(data: bytes) -> None:
            if on_output is not None:
                on_output(data)
            else:
                write_all(fd, data)
            if log is not None:
                log.write(stream, data)
        return emit

    import os

    pipes: list[tuple[int, Sink]] = []
    writers: list[int] = []
    out, err = stdout, stderr
    if not tty and (on_output is not None or log is not None):
        r, out = os.pipe2(os.O_CLOEXEC)
        pipes.append((r, sink(stdout, "stdout")))
        writers.append(out)
        if log is None:
            err = out  # captured together, in order
        else:
            r, err = os.pipe2(os.O_CLOEXEC)
            pipes.append((r, sink(stderr, "stderr")))
            writers.append(err)
    task = None
    code: int | None = None
    error = ""
    try:
        with Forwarder() as fwd:
            try:
                task = launchmod.start(launch, c.dir, stdin, out, err, on_event=on_event)
            finally:
                for fd in writers:
                    os.close(fd)
            st.status, st.pid, st.started_at = containers.RUNNING, task.pid, containers.now_ns()
            c.cdir.save()
            fwd.started(task.pid)
            try:
                if task.master is not None:
                    from .tty import Terminal

                    master, task.master = task.master, None  # the Terminal closes it
                    with Terminal(master, stdin, None, sink(stdout, "stdout"), task.pid) as term:
                        status = term.pump(fwd)
                else:
                    status = wait(task.pid, fwd, pipes)
                code = task.exit_code(status)
            except BaseException:
                kill_and_reap(task.pid)
                raise
        return code
    except ContainerError as e:
        error, code = str(e), e.status
        raise
    finally:
        try:
            if task is not None:
                task.close()
            for r, _ in pipes:
                os.close(r)
            if log is not None:
                log.close()
            if before_release is not None and code is not None and not error:
                before_release()
        finally:
            finish(c, code, error, started=task is not None)


def finish(c: Container, code: int | None, error: str = "", *, started: bool = True) -> None:
    """Release what the container holds; with --rm, its directory and record too.

    A kept container is recorded exited (or, when it never started, created with the error)."""
    from . import snapshotter

    st = c.state
    try:
        c.cdir.release_resources()
    finally:
        try:
            if st.rm:
                containers.remove_dir(c.dir)
                if c.record is not None:
                    records.delete(c.store.db, c.id)
            else:
                launch = c.launch
                if launch.snapshotter == "overlay":
                    snapshotter.get("overlay").remove(launch.active)  # scratch; a copy's tree is its state
                launch.save(c.dir)  # with the snapshotter it ended up using
                st.pid = 0
                st.error = error
                if started:
                    st.status, st.exit_code, st.finished_at = containers.EXITED, code if code is not None else 137, \
                        containers.now_ns()
                else:
                    st.status, st.exit_code = containers.CREATED, code if code is not None else 125
                c.cdir.save()
        finally:
            c.cdir.unlock()
