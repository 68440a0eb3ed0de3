"""Runs a plan: stages in dependency order (independent ones side by side,
schedule.py), one cached step at a time within a stage.

Every instruction is a step with a chained cache key (builder/CACHE.md). A
hit reuses the config (and layer) the step produced before, so a fully
cached rebuild gives the same image ID; a miss computes the step and
records it. Metadata steps only edit the config; RUN, COPY, ADD and a
WORKDIR that must create its directory also add a layer.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from storage import mediatypes as mt
from storage.errors import ImageNotFound, StorageError
from storage.model import ImageConfig, Platform

from . import cache as cachemod
from . import dispatch, history, layerio
from .args import BuildArgs, GlobalScope, StageArgs
from .cache import BuildCache
from .dispatch import DEFAULT_PATH, StageState
from .errors import BuildError, DockerfileError, ExpansionError, StepError
from .expand import Lexer
from .instructions import Command, From, Onbuild, convert
from .options import BuildEvent, BuildOptions
from .parse import parse_line
from .schedule import StageRunner
from .stages import Plan, Stage
from .stepctx import Job, StepContext
from .steps import LAYER_STEPS

Emit = Callable[[BuildEvent], None]


class Executor:
    def __init__(self, store, opts: BuildOptions, plan: Plan, lexer: Lexer, emit: Emit,
                 epoch: int | None, dockerfile_dir: Path | None = None):
        self.store = store
        self.opts = opts
        self.plan = plan
        self.lexer = lexer
        self.emit = emit
        self.epoch = epoch
        self.cache = BuildCache(store)
        self.build_args = BuildArgs(dict(opts.build_args))
        self.platform = Platform.host()
        self.globals = GlobalScope.new(self.build_args, self.platform)
        self.runner: StageRunner[StageState] = StageRunner(self._build_stage_at,
                                                            lambda i: plan.stages[i].label)
        self._lock = threading.RLock()  # step numbers, counters and the order events are emitted in
        self.step_no = 0
        self._current: dict[int, int] = {}  # stage index -> #N of its running step
        self.steps = 0
        self.cached = 0
        self.warnings: list[str] = []
        self.dockerfile_dir = dockerfile_dir
        self.multi_stage = len(plan.stages) > 1
        self.ctx = StepContext(store, opts, epoch, self.platform, plan.filename, lexer, emit, self._stage_of,
                               self._output)

    # -- stages ------------------------------------------------------------------
    def declare_globals(self) -> None:
        for a in self.plan.global_args:
            for k, v in a.pairs:
                env = self.globals.env()
                try:
                    key = self.lexer.word(k, env)
                    value = self.lexer.word(v, env) if v is not None else None
                except ExpansionError as e:
                    raise DockerfileError(str(e), a.line, self.plan.filename) from None
                self.globals.declare(key, value)

    @property
    def results(self) -> dict[int, StageState]:
        return self.runner.results

    def run(self, target: Stage) -> StageState:
        """Build the target and every stage it needs, up to `--jobs` stages at once."""
        graph = self.plan.graph(target, self.globals.env(), self.lexer)
        self.runner.run(graph, self.opts.jobs or os.cpu_count() or 1)
        return self.results[target.index]

    def stage_result(self, stage: Stage) -> StageState:
        return self.runner.result(stage.index)

    def _build_stage_at(self, index: int) -> StageState:
        return self._build_stage(self.plan.stages[index])

    def _build_stage(self, stage: Stage) -> StageState:
        total = 1 + len(stage.commands)
        state, triggers = self._from(stage, total)
        k = 1
        for text in triggers:
            inst = parse_line(text, stage.from_.line, self.lexer.escape, self.plan.filename)
            cmd = convert(inst, self.plan.filename)
            if isinstance(cmd, Onbuild) or cmd.cmd in ("FROM", "MAINTAINER"):
                raise DockerfileError(f"{cmd.cmd} isn't allowed as an ONBUILD trigger", cmd.line, self.plan.filename)
            self.step(state, stage, cmd, k, total, label=f"ONBUILD {text}")
        for cmd in stage.commands:
            k += 1
            self.step(state, stage, cmd, k, total)
        return state

    def _from(self, stage: Stage, total: int) -> tuple[StageState, list[str]]:
        f: From = stage.from_
        env = self.globals.env()
        try:
            ref = self.lexer.word(f.image, env)
            plat_text = self.lexer.word(f.platform, env) if f.platform else None
        except ExpansionError as e:
            raise DockerfileError(str(e), f.line, self.plan.filename) from None
        if not ref:
            raise DockerfileError("FROM names no image (an empty variable?)", f.line, self.plan.filename)
        platform = self.platform
        if plat_text:
            try:
                platform = Platform.parse(plat_text)
            except StorageError as e:
                raise DockerfileError(str(e), f.line, self.plan.filename) from None
        started = time.monotonic()
        shown = f"FROM {ref}" + (f" AS {f.name}" if f.name else "")  # variables expanded, as BuildKit shows it
        dep = self.plan.lookup(ref, before=stage.index)
        if ref.lower() == "scratch":
            config = ImageConfig.new(platform)
            config.config["Env"] = [f"PATH={DEFAULT_PATH}"]
            state = StageState(config, [], cachemod.key(None, base="scratch", platform=str(platform)),
                               StageArgs(self.globals), filename=self.plan.filename, lexer=self.lexer)
        elif dep is not None:
            state = self.stage_result(dep).copy()
            state.cmd_set = False
        else:
            try:
                image = self.store.resolve(ref, platform)
            except ImageNotFound:
                raise DockerfileError(f"FROM {ref}: no such image in the local store (pull or import it first)",
                                      f.line, self.plan.filename) from None
            except StorageError as e:
                raise DockerfileError(f"FROM {ref}: {e}", f.line, self.plan.filename) from None
            config = _base_config(image.config)
            env = list(config.config.get("Env") or [])
            if not any(e.startswith("PATH=") for e in env):
                config.config["Env"] = [f"PATH={DEFAULT_PATH}", *env]  # as BuildKit and buildah do
            layers = [layerio.oci_descriptor(d) for d in image.manifest.layers if mt.is_layer(d.media_type)]
            state = StageState(config, layers, cachemod.key(None, base=image.manifest.digest),
                               StageArgs(self.globals), filename=self.plan.filename, lexer=self.lexer)
        self._emit("step", stage, 1, total, shown, cached=True)
        self._emit("done", stage, 1, total, shown, cached=True, elapsed=time.monotonic() - started)
        triggers = list(state.cfg.get("OnBuild") or [])
        if triggers:
            state.cfg.pop("OnBuild", None)  # triggers run once, in this child, and are not inherited
            state.key = cachemod.key(state.key, onbuild_cleared=True)
        return state, triggers

    def _stage_of(self, ref: str, of: int) -> tuple[Stage, StageState] | None:
        dep = self.plan.source_stage(ref, self.plan.stages[of])
        if dep is None:
            return None
        if dep.index == of:
            raise BuildError(f"circular dependency between stages: {dep.label} -> {dep.label}")
        return dep, self.stage_result(dep)

    def _output(self, stage: Stage, line: str) -> None:
        self._emit("output", stage, 0, 0, line)

    # -- steps -------------------------------------------------------------------
    def _emit(self, kind: str, stage: Stage, index: int, total: int, text: str, **kw) -> int:
        """Report a step starting (`text` is the instruction; it gets the next #N), or an
        output line or the end of the stage's current step; returns the step's number."""
        with self._lock:
            if kind == "step":
                self.step_no += 1
                self._current[stage.index] = self.step_no
            number = self._current.get(stage.index, 0)
            where = stage.label if self.multi_stage or stage.name else None
            fields = {"text": text} if kind == "output" else {"instruction": text}
            self.emit(BuildEvent(id=f"#{number}", action=kind, current=index, total=total, step=number,
                                 stage=where, **fields, **kw))
            return number

    def step(self, state: StageState, stage: Stage, cmd: Command, index: int, total: int,
             label: str | None = None) -> None:
        text = label or cmd.inst.original
        started = time.monotonic()
        self.runner.check()
        with self._lock:
            self.steps += 1
        make_job = LAYER_STEPS.get(type(cmd))
        if make_job is not None:
            job = make_job(self.ctx, state, stage, cmd)
            hit = None if self.opts.no_cache else self.cache.get(job.key)
            linked = None
            if hit is None and job.link_key is not None and not self.opts.no_cache:
                linked = self.cache.get(job.link_key)  # a --link layer made on another base
            self._emit("step", stage, index, total, text, cached=hit is not None or linked is not None)
            if hit is not None:
                self._apply_hit(state, hit)
            elif linked is not None:
                layer = layerio.NewLayer(linked.diff_id, layerio.descriptor_for(
                    self.store, linked.diff_id, self.opts.storage_compression))  # type: ignore[arg-type]
                self._record(state, job.key, job.created_by + " # buildkit", layer)
                state.key = job.key
                hit = linked
            else:
                self._run_job(state, stage, cmd, job, index, total)
        else:
            handler = dispatch.HANDLERS[type(cmd)]
            created_by = handler(state, cmd)
            key = cachemod.key(state.key, step=created_by, **self.ctx.key_extra())
            hit = None if self.opts.no_cache else self.cache.get(key)
            self._emit("step", stage, index, total, text, cached=hit is not None, metadata=True)
            if hit is not None:
                self._apply_hit(state, hit)
            else:
                self._record(state, key, created_by, None)
            state.key = key
        if hit is not None:
            with self._lock:
                self.cached += 1
        self._emit("done", stage, index, total, text, cached=hit is not None, metadata=make_job is None,
                   elapsed=time.monotonic() - started)

    def _apply_hit(self, state: StageState, hit: cachemod.Entry) -> None:
        state.config = ImageConfig(hit.config).changed()
        if hit.diff_id is not None:
            d = layerio.descriptor_for(self.store, hit.diff_id, self.opts.storage_compression)
            self.cache.hold_more(hit.key, [d.digest])
            state.layers.append(d)
        state.key = hit.key

    def _run_job(self, state: StageState, stage: Stage, cmd: Command, job: Job, index: int, total: int) -> None:
        try:
            layer = job.produce()
        except (BuildError, DockerfileError):
            raise
        except StorageError as e:
            raise StepError(f"{cmd.cmd}: {e}", cmd.line, self.plan.filename) from None
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise StepError(f"{cmd.cmd}: {e.strerror or e}{where}", cmd.line, self.plan.filename) from None
        if layer is None:
            self._record(state, job.key, job.created_by, None)
        else:
            self._record(state, job.key, job.created_by + " # buildkit", layer)
            if job.link_key is not None:
                self.cache.put(job.link_key, {"link": True}, layer.diff_id, [layer.descriptor.digest])
        state.key = job.key

    def _record(self, state: StageState, key: str, created_by: str, layer: "layerio.NewLayer | None") -> None:
        now = self.ctx.now()
        state.config.history.append(history.entry(created_by, now, layer is None))
        state.config.data["created"] = now
        blobs: list[str] = []
        diff_id = None
        if layer is not None:
            state.config.diff_ids.append(layer.diff_id)
            state.layers.append(layer.descriptor)
            blobs = [layer.descriptor.digest]
            diff_id = layer.diff_id
        self.cache.put(key, state.config.data, diff_id, blobs)

    def finish(self) -> None:
        self.ctx.flush()
        unused = self.build_args.unused()
        if unused:
            msg = f"one or more build-args {unused} were not consumed"
            self.warnings.append(msg)
            self.emit(BuildEvent("warning", text=msg))


def _base_config(base: ImageConfig) -> ImageConfig:
    """A child's starting config: the base's runtime config, rootfs and history."""
    src = base.data
    data: dict = {k: src[k] for k in ("architecture", "os", "os.version", "os.features", "variant", "author")
                  if k in src}
    data["config"] = dict(src.get("config") or {})
    data["rootfs"] = {"type": "layers", "diff_ids": list(base.diff_ids)}
    data["history"] = list(src.get("history") or [])
    if src.get("created"):
        data["created"] = src["created"]
    return ImageConfig(data).changed()


