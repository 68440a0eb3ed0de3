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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

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
from .hits import Finder
from .stepctx import Incomplete, Job, StepContext
from .steps import LAYER_STEPS, ON_PENDING

if TYPE_CHECKING:  # --cache-from's machinery: loaded by the builds that use it
    from .cacheimport import Imports

Emit = Callable[[BuildEvent], None]


@dataclass
class Trail:
    """One step as --cache-to exports it: its key, the key before it, where its history
    entry and layer are in the stage's final config, and the extra keys it is found by."""
    key: str
    parent: str
    history: int | None   # None: the step added no history entry (ONBUILD)
    layer: int | None
    link_key: str | None = None
    fast_key: str | None = None


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
        self.finder = Finder(store, self.cache, None, opts.storage_compression)
        self.trail: dict[int, list[Trail]] = {}   # stage index -> its steps, for --cache-to
        self.bases: dict[int, int] = {}           # stage index -> the stage its FROM names
        self.build_args = BuildArgs(dict(opts.build_args))
        self.platform = Platform.host()
        self.globals = GlobalScope.new(self.build_args, self.platform)
        self.runner: StageRunner[StageState] = StageRunner(self._build_stage_at,
                                                            lambda i: plan.stages[i].label)
        self._lock = threading.RLock()  # step numbers, counters and the order events are emitted in
        self.step_no = 0
        self._current: dict[int, int] = {}  # stage index -> #N of its running step
        self.dry: dict[int, StageState | None] = {}  # the dry pass: complete stages, None where a step missed
        self._dry_mode = False
        self._buffered: dict[int, list] = {}  # a complete stage's events, shown when its result is used
        self._needs: dict[int, set[int]] = {}  # stage -> stages whose content its build needs (dry pass)
        self.steps = 0
        self.cached = 0
        self.warnings: list[str] = []
        self.dockerfile_dir = dockerfile_dir
        self.multi_stage = len(plan.stages) > 1
        self.ctx = StepContext(store, opts, epoch, self.platform, plan.filename, lexer, emit, self._stage_of,
                               self._output, lambda i, of: self._content(i, of).config.diff_ids, self._settle)

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
        """Build the target and the stages whose content it needs, up to `--jobs` at once.

        First a dry pass over the graph, dependencies first: each stage as far as its steps
        are cache hits (a *complete* stage needs nothing more), then, from its first miss
        on, only its keys (a *partial* stage: its last key is known, so a `COPY --from` of
        it can still be found by that key). Nothing runs and nothing is shown. Then only
        the stages whose content turned out to be needed are built; a stage whose every
        use was a hit never runs, as with BuildKit (builder/CACHE.md, "Which stages run")."""
        graph = self.plan.graph(target, self.globals.env(), self.lexer)
        if not self.opts.no_cache:
            self._dry_pass(graph)
        needed: set[int] = set()
        todo = [] if self._complete(target.index) else [target.index]
        while todo:
            i = todo.pop()
            if i not in needed:
                needed.add(i)
                todo += [d for d in self._needs.get(i, graph[i]) if not self._complete(d)]
        self.runner.run({i: [d for d in deps if d in needed] for i, deps in graph.items() if i in needed},
                        self.opts.jobs or os.cpu_count() or 1)
        if target.index not in needed:
            self._show(target.index)
        return self.stage_result(target)

    def shown_when_cached(self, target: Stage) -> set[str | None]:
        """How the stages a rebuild that hits every step shows are named in events (fastpath.py):
        the target and the stages its FROM chain names. A stage that only `--from` reads is shown
        when it runs, not when it is cached."""
        chain = set()
        index: int | None = target.index
        while index is not None:
            stage = self.plan.stages[index]
            chain.add(stage.label if self.multi_stage or stage.name else None)
            index = self.bases.get(index)
        return chain

    def states(self) -> dict[int, StageState]:
        """Every stage's final state: built, or complete in the dry pass."""
        return {**{i: s for i, s in self.dry.items() if s is not None and not s.partial}, **self.results}

    def _complete(self, index: int) -> bool:
        st = self.dry.get(index)
        return st is not None and not st.partial

    def _dry_pass(self, graph: dict[int, list[int]]) -> None:
        self._dry_mode = True
        try:
            for i in graph:
                self._buffered[i] = []
                self._needs[i] = set()
                try:
                    self.dry[i] = self._build_stage(self.plan.stages[i])
                except (Incomplete, BuildError):
                    self.dry[i] = None  # keys unknown: built for real if needed (an error shows then)
                    self._needs[i] = set(graph[i])
                if self.dry[i] is None or self.dry[i].partial:  # type: ignore[union-attr]
                    self._buffered.pop(i, None)
                    self.trail.pop(i, None)
        finally:
            self._dry_mode = False

    def _show(self, index: int) -> None:
        """A stage complete in the dry pass, as the build shows it: its base first, then its steps."""
        with self._lock:
            events = self._buffered.pop(index, None)
        if events is None:
            return
        if index in self.bases:
            self._show(self.bases[index])
        for kind, stage, k, total, text, kw in events:
            self._emit(kind, stage, k, total, text, **kw)
            if kind == "step" and not kw.get("from_"):
                with self._lock:
                    self.steps += 1
                    self.cached += 1

    def stage_result(self, stage: Stage) -> StageState:
        """A stage's state for FROM: built (or complete in the dry pass); in the dry pass, its
        dry state, a partial one included (the child is then partial too)."""
        if self._dry_mode:
            state = self.dry.get(stage.index)
            if state is None:
                raise Incomplete(stage.label)
            return state
        return self.runner.result(stage.index)

    def _content(self, index: int, of: int) -> StageState:
        """A stage whose files a step of stage `of` reads: built now if it was not."""
        if self._dry_mode:
            self._needs[of].add(index)
            raise Incomplete(self.plan.stages[index].label)
        return self.runner.result(index)

    def _build_stage_at(self, index: int) -> StageState:
        done = self.dry.get(index)
        if done is not None and not done.partial:
            return done
        self.trail[index] = []
        return self._build_stage(self.plan.stages[index])

    def _build_stage(self, stage: Stage) -> StageState:
        total = 1 + len(stage.commands)
        state, triggers = self._from(stage, total)
        k = 1
        try:
            for text in triggers:
                inst = parse_line(text, stage.from_.line, self.lexer.escape, self.plan.filename)
                cmd = convert(inst, self.plan.filename)
                if isinstance(cmd, Onbuild) or cmd.cmd in ("FROM", "MAINTAINER"):
                    raise DockerfileError(f"{cmd.cmd} isn't allowed as an ONBUILD trigger", cmd.line,
                                          self.plan.filename)
                self.step(state, stage, cmd, k, total, label=f"ONBUILD {text}")
            for cmd in stage.commands:
                k += 1
                self.step(state, stage, cmd, k, total)
        finally:
            if state.pending is not None:  # the stage's last step (or a failure after it)
                self._settle(state)
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
            config.config["WorkingDir"] = "/"  # as BuildKit's empty image
            state = StageState(config, [], cachemod.key(None, base="scratch", platform=str(platform)),
                               StageArgs(self.globals), filename=self.plan.filename, lexer=self.lexer)
        elif dep is not None:
            state = self.stage_result(dep).copy()
            state.cmd_set = False
            self.bases[stage.index] = dep.index
            if not self._dry_mode:
                self._show(dep.index)
        else:
            try:
                image = self.ctx.resolve_image(ref, platform)
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
        if dep is None and self.ctx.imports is not None:
            state.follow = self.ctx.imports.cursors(state.config.history, state.config.diff_ids)
        self._emit("step", stage, 1, total, shown, cached=True, from_=True)
        self._emit("done", stage, 1, total, shown, cached=True, elapsed=time.monotonic() - started)
        triggers = list(state.cfg.get("OnBuild") or [])
        if triggers:
            state.cfg.pop("OnBuild", None)  # triggers run once, in this child, and are not inherited
            state.key = cachemod.key(state.key, onbuild_cleared=True)
        return state, triggers

    def _stage_of(self, ref: str, of: int) -> tuple[Stage, StageState] | None:
        """A stage a step names (--from, from=): built, or its dry state (complete, or partial:
        its key alone, its files built on demand through `_content`), or built now."""
        dep = self.plan.source_stage(ref, self.plan.stages[of])
        if dep is None:
            return None
        if dep.index == of:
            raise BuildError(f"circular dependency between stages: {dep.label} -> {dep.label}")
        if dep.index in self.results:
            return dep, self.results[dep.index]
        state = self.dry.get(dep.index)
        if state is not None:
            return dep, state
        if self._dry_mode:
            self._needs[of].add(dep.index)
            raise Incomplete(dep.label)
        return dep, self.runner.result(dep.index)

    def _output(self, stage: Stage, line: str) -> None:
        self._emit("output", stage, 0, 0, line)

    # -- steps -------------------------------------------------------------------
    def _emit(self, kind: str, stage: Stage, index: int, total: int, text: str, **kw) -> int:
        """Report a step starting (`text` is the instruction; it gets the next #N), or an
        output line or the end of the stage's current step; returns the step's number.
        The dry pass keeps its events, shown only if its result is used (`_show`)."""
        if self._dry_mode:
            self._buffered[stage.index].append((kind, stage, index, total, text, kw))
            return 0
        kw.pop("from_", None)
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
        if not self._dry_mode:
            with self._lock:
                self.steps += 1
        make_job = LAYER_STEPS.get(type(cmd))
        if state.pending is not None and (type(cmd) not in ON_PENDING or state.follow):
            self._settle(state)  # this step reads the stage's config: the layer below must be in it
        parent, layers_before, entries_before = state.key, len(state.config.diff_ids), len(state.config.history)
        if make_job is not None:
            job = make_job(self.ctx, state, stage, cmd)
        else:
            created_by = dispatch.HANDLERS[type(cmd)](state, cmd)
            job = Job(cachemod.key(state.key, step=created_by, **self.ctx.key_extra()), created_by, None,
                      history=type(cmd) not in dispatch.NO_HISTORY)
        if state.partial:  # the dry pass past a miss: keys only
            state.key = self.finder.next_key(job)
            return
        if self.opts.no_cache:
            job.resolve()
            hit = None
        else:
            hit = self.finder.find(state, job, make_job is None or job.plain)
        if hit is None and self._dry_mode:
            state.partial = True
            state.key = job.resolve()
            return
        if state.pending is not None and hit is not None:
            self._settle(state)
        self._emit("step", stage, index, total, text, cached=hit is not None, metadata=make_job is None)
        if hit is not None and hit.link:
            self._record(state, job.key, job, layerio.NewLayer(hit.diff_id, hit.descriptor))  # type: ignore[arg-type]
            state.key = job.key  # type: ignore[assignment]
        elif hit is not None:
            self.finder.apply(state, hit)
        elif job.produce is None:
            self._record(state, job.key, job, None)  # type: ignore[arg-type]
            state.key = job.key  # type: ignore[assignment]
        else:
            self._run_job(state, cmd, job, stage, parent)
            state.ran = True
        if job.fast_key is not None and (hit is None or hit.key != job.fast_key):
            self.finder.alias(job.fast_key, state.key)
        if state.pending is None:  # else the step's layer is still being written: trailed by _settle
            made = len(state.config.diff_ids) > layers_before
            self._trail(stage, state, state.key, parent, job, made, len(state.config.history) > entries_before)
        if hit is not None and not self._dry_mode:
            with self._lock:
                self.cached += 1
        self._emit("done", stage, index, total, text, cached=hit is not None, metadata=make_job is None,
                   elapsed=time.monotonic() - started)

    def _trail(self, stage: Stage, state: StageState, key: str, parent: str, job: Job, made: bool,
               entry: bool) -> None:
        """Remember the step for --cache-to, and move plain --cache-from images along."""
        h = len(state.config.history) - 1 if entry else None
        n = len(state.config.diff_ids) - 1 if made else None
        self.trail.setdefault(stage.index, []).append(Trail(key, parent, h, n, job.link_key, job.fast_key))
        if state.follow and entry:
            from .cacheimport import Imports

            state.follow = Imports.advance(state.follow, state.config.history[-1],
                                           state.config.diff_ids[-1] if made else None)

    def _run_job(self, state: StageState, cmd: Command, job: Job, stage: Stage, parent: str) -> None:
        below = state.pending  # a RUN starting on the tree of a layer still being written
        with self._step_errors(cmd):
            layer = job.produce()  # type: ignore[misc]
        if below is not None and state.pending is below:
            self._settle(state)  # (the step settles it itself, as soon as it no longer runs)
        key = job.resolve()
        if isinstance(layer, layerio.Pending):
            # recorded once written: by the next step first (a RUN starts on its tree meanwhile)
            state.pending = layer
            state.pending_step = (cmd, job, key, stage, parent, len(state.config.history))
            state.key = key
            return
        self._recorded(state, key, job, layer)
        state.key = key

    def _settle(self, state: StageState) -> None:
        """The stage's pending layer (StageState.pending) waited for and recorded as its step
        would have been at once: its history entry, config, cache entries and --cache-to trail."""
        pending, state.pending = state.pending, None
        if pending is None:
            return
        (cmd, job, key, stage, parent, entries_before), state.pending_step = state.pending_step, None
        with self._step_errors(cmd):
            layer = pending.result()
        self._recorded(state, key, job, layer)
        self._trail(stage, state, key, parent, job, True, len(state.config.history) > entries_before)

    def _recorded(self, state: StageState, key: str, job: Job, layer: "layerio.NewLayer | None") -> None:
        self._record(state, key, job, layer)
        if layer is not None and job.link_key is not None:
            self.cache.put(job.link_key, {"link": True}, layer.diff_id, [layer.descriptor.digest])

    @contextmanager
    def _step_errors(self, cmd: Command) -> Iterator[None]:
        """A step's storage and OS errors as one line naming its instruction."""
        try:
            yield
        except (BuildError, DockerfileError):
            raise
        except StorageError as e:
            raise StepError(f"{cmd.cmd}: {e}", cmd.line, self.plan.filename) from None
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise StepError(f"{cmd.cmd}: {e.strerror or e}{where}", cmd.line, self.plan.filename) from None

    def _record(self, state: StageState, key: str, job: Job, layer: "layerio.NewLayer | None") -> None:
        now = self.ctx.now()
        if job.history:
            created_by = job.created_by + (job.suffix if layer is not None else "")
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

    def use_imports(self, imports: Imports) -> None:
        """--cache-from sources, opened by the caller (before any stage runs)."""
        self.ctx.imports = imports
        self.finder.imports = imports

    def finish(self) -> None:
        self.ctx.flush()
        unused = self.build_args.unused()
        if unused:
            msg = f"one or more build-args {unused} were not consumed"
            self.warnings.append(msg)
            self.emit(BuildEvent(action="warning", text=msg))


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


