"""RUN: a command on an overlay of the stage's layers; the upper directory is the new layer.

The command sees the image's ENV, the ARGs declared so far (ENV wins), and
proxy build args; PATH is added when the image has none. Heredocs follow
BuildKit: `RUN <<EOF` alone runs the body with the shell (or, when it starts
with `#!`, as a script mounted at /dev/pipes/EOF); any other heredoc use is
handed to the shell whole, body included. `--mount`s are made by mounts.py;
their contents never reach the layer, and of a secret only its id, target
and options reach the key.
"""
from __future__ import annotations

import os
from collections import deque
from contextlib import ExitStack
from pathlib import Path

from . import cache as cachemod
from . import history, layerio
from .args import env_dict
from .dispatch import DEFAULT_PATH
from .errors import DockerfileError, RunFailed, StepError
from .instructions import Run
from .options import BuildEvent
from .parse import _HEREDOC_RE
from .stepctx import Job, StepContext

OUTPUT_TAIL = 40
HOSTNAME = "buildkitsandbox"  # what a RUN step sees as its host name, as with BuildKit


def argv_of(state, cmd: Run) -> tuple[list[str], dict[str, bytes]]:
    """The command line, and files to mount read-only (path in the container -> content)."""
    if cmd.exec_form is not None:
        return list(cmd.exec_form), {}
    text = cmd.shell
    if cmd.heredocs:
        words = text.split()
        single = len(words) == 1 and _HEREDOC_RE.match(words[0]) and len(cmd.heredocs) == 1
        if single:
            h = cmd.heredocs[0]
            body = h.text()
            if body.startswith("#!"):
                target = f"/dev/pipes/{h.name}"
                return [*state.shell(), target], {target: body.encode()}
            return [*state.shell(), body], {}
        full = text
        for h in cmd.heredocs:
            full += "\n" + h.content + h.name
        return [*state.shell(), full], {}
    return [*state.shell(), text], {}


def job(ctx: StepContext, state, stage, cmd: Run) -> Job:
    argv, files = argv_of(state, cmd)
    if not argv:
        raise StepError("RUN: empty command", cmd.line, ctx.filename)
    env = state.env()
    run_args = state.args.run_args(env)
    run_env = state.args.run_env(env)
    if "PATH" not in env_dict(run_env):
        run_env.append(f"PATH={DEFAULT_PATH}")
    network = cmd.network or ctx.opts.network
    if network == "default":
        network = "host"  # no build network of our own yet
    resolved = []
    for i, spec in enumerate(cmd.mounts):
        try:
            resolved.append(spec.resolve(lambda v: state.word(v, cmd), state.workdir(), i))
        except ValueError as e:
            raise DockerfileError(f"RUN --mount={spec.text}: {e}", cmd.line, ctx.filename) from None
    if resolved:
        from . import mounts
    prepared = mounts.prepare(ctx, resolved, stage.index, cmd.line) if resolved else None
    records = prepared.records if prepared is not None else []
    extra = {"mounts": records} if records else {}  # absent when unused: older keys stay valid
    key = cachemod.key(state.key, run=argv, args=run_args, network=network,
                       files={k: v.decode(errors="replace") for k, v in files.items()}, **extra, **ctx.key_extra())
    created_by = history.run_text(argv, run_args)
    diff_ids = list(state.config.diff_ids)
    below = state.pending  # a layer still being written (a COPY's): the step runs on its tree meanwhile
    user = state.cfg.get("User") or ""
    workdir = state.workdir()

    def produce():
        from runtime.build import run_step
        from runtime.errors import ContainerError

        tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
        pending = [b""]

        def on_output(data: bytes | str) -> None:
            if isinstance(data, str):
                data = data.encode()
            buf = pending[0] + data
            *lines, pending[0] = buf.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace").rstrip("\r")
                tail.append(text)
                ctx.output(stage, text)

        def on_event(kind: str, message: str) -> None:
            ctx.emit(BuildEvent(action="runtime", id=kind, text=message))

        with ctx.staging() as tmp, ExitStack() as stack:
            upper, work = tmp / "upper", tmp / "work"
            upper.mkdir()
            work.mkdir()
            step_mounts, secret_env = mounts.realize(ctx, prepared, stack, tmp, cmd.line) if prepared else ([], [])
            if files:
                pipes = tmp / "pipes"
                pipes.mkdir()
                for target, data in files.items():
                    host = pipes / os.path.basename(target)
                    host.write_bytes(data)
                    host.chmod(0o755)
                    step_mounts.append((str(host), target, True))
            ctx.need(diff_ids)
            try:
                code = run_step(ctx.store, diff_ids, upper, work, argv, run_env + secret_env, user, workdir,
                                network, step_mounts, on_output, on_event=on_event, hostname=HOSTNAME,
                                top=below.tree if below is not None else None)
            except ContainerError as e:
                raise StepError(f"process \"{' '.join(argv)}\" could not run: {e}", cmd.line,
                                ctx.filename) from None
            finally:
                if below is not None:  # recorded now, whatever this step does next (its error first)
                    ctx.settle(state)
            if pending[0]:
                on_output(b"\n")
            if code != 0:
                shown = " ".join(argv)
                raise RunFailed(f"process \"{shown}\" did not complete successfully: exit code: {code}",
                                cmd.line, ctx.filename, list(tail), code)
            # a RUN that changed nothing still makes a layer (an empty one), as BuildKit does
            layer = layerio.write_upper(ctx.store, upper, ctx.opts.storage_compression, ctx.epoch)
            layerio.adopt(ctx.store, [*state.config.diff_ids, layer.diff_id], upper)
            return layer

    return Job(key, created_by, produce, plain=not cmd.mounts and not files)
