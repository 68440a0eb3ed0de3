"""Multi-stage builds as a graph: which stages the target needs, in order.

A stage depends on another when its FROM names an earlier stage, or when a
`COPY --from` or a `RUN --mount=...,from=` names any stage (by name or index;
a later one too, as BuildKit resolves them). Names are expanded with the
global ARGs, as FROM lines are. The graph of the stages the target reaches
is made and checked for cycles before anything runs; stages the target does
not reach are never built, and stages that do not depend on each other may
run at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .errors import BuildError, DockerfileError, ExpansionError
from .expand import Lexer
from .instructions import Arg, Command, Copy, From, Run, convert
from .parse import Dockerfile


@dataclass
class Stage:
    """One FROM and the instructions up to the next."""
    index: int
    from_: From
    commands: list[Command] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        return self.from_.name

    @property
    def label(self) -> str:
        """How progress lines name the stage (`build`, or `stage-1` when unnamed)."""
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    """A Dockerfile as stages, with the ARGs declared before the first FROM."""
    global_args: list[Arg]
    stages: list[Stage]
    filename: str = "Dockerfile"

    def lookup(self, ref: str, before: int | None = None) -> Stage | None:
        """The stage `ref` names (a name, case-insensitive, or an index), if any
        among the stages before index `before`."""
        limit = len(self.stages) if before is None else before
        if ref.isdigit():
            i = int(ref)
            return self.stages[i] if i < limit else None
        low = ref.lower()
        for s in self.stages[:limit]:
            if s.name == low:
                return s
        return None

    def target(self, name: str | None) -> Stage:
        if not name:
            return self.stages[-1]
        s = self.lookup(name)
        if s is None:
            raise BuildError(f"target stage {name!r} could not be found")
        return s

    def source_stage(self, ref: str, of: Stage) -> Stage | None:
        """The stage a `COPY --from`/`--mount from=` in stage `of` names, if any:
        any stage of the file, later ones and `of` itself included (a cycle, refused by `graph`)."""
        return self.lookup(ref)

    def dependencies(self, stage: Stage, env: Mapping[str, str], lexer: Lexer) -> list[Stage]:
        """The stages `stage` needs directly (FROM, COPY --from, RUN --mount from=)."""
        deps: list[Stage] = []
        base = self.lookup(_expand(stage.from_.image, env, lexer, stage.from_, self.filename), stage.index)
        if base is not None:
            deps.append(base)
        for c in stage.commands:
            refs = [c.from_] if isinstance(c, Copy) and c.from_ else []
            if isinstance(c, Run):
                refs = [m.options["from"] for m in c.mounts if m.options.get("from")]
            for ref in refs:
                dep = self.source_stage(_expand(ref, env, lexer, c, self.filename), stage)
                if dep is not None and dep not in deps:
                    deps.append(dep)
        return deps

    def graph(self, target: Stage, env: Mapping[str, str], lexer: Lexer) -> dict[int, list[int]]:
        """Every stage the target reaches -> the stages it needs, dependencies before
        dependents (dict order); BuildError naming the stages of a cycle."""
        deps: dict[int, list[int]] = {}
        order: dict[int, list[int]] = {}
        path: list[Stage] = []

        def visit(s: Stage) -> None:
            if s.index in order:
                return
            if s in path:
                cycle = path[path.index(s):] + [s]
                raise BuildError("circular dependency between stages: " + " -> ".join(x.label for x in cycle))
            path.append(s)
            if s.index not in deps:
                deps[s.index] = [d.index for d in self.dependencies(s, env, lexer)]
            for d in deps[s.index]:
                visit(self.stages[d])
            path.pop()
            order[s.index] = deps[s.index]

        visit(target)
        return order

    def needed(self, target: Stage, env: Mapping[str, str], lexer: Lexer) -> list[Stage]:
        """Every stage the target reaches, dependencies first, the target last."""
        return [self.stages[i] for i in self.graph(target, env, lexer)]


def _expand(text: str, env: Mapping[str, str], lexer: Lexer, cmd: Command, filename: str) -> str:
    try:
        return lexer.word(text, env)
    except ExpansionError as e:
        raise DockerfileError(str(e), cmd.line, filename) from None


def plan(df: Dockerfile) -> Plan:
    """Typed commands grouped into the global ARGs and the stages."""
    global_args: list[Arg] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for inst in df.instructions:
        cmd = convert(inst, df.filename)
        if isinstance(cmd, From):
            if cmd.name:
                if cmd.name in names:
                    raise DockerfileError(f"duplicate stage name {cmd.name!r}", cmd.line, df.filename)
                names.add(cmd.name)
            stages.append(Stage(len(stages), cmd))
        elif not stages:
            if not isinstance(cmd, Arg):
                raise DockerfileError(f"no build stage in current context: {inst.cmd} before the first FROM "
                                      "(only ARG may come before FROM)", cmd.line, df.filename)
            global_args.append(cmd)
        else:
            stages[-1].commands.append(cmd)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction", None, df.filename)
    return Plan(global_args, stages, df.filename)
