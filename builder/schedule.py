"""Stages run as soon as what they need is built, up to `jobs` at a time.

The graph (stages.Plan.graph) is made and checked for cycles before anything
runs. Each stage is built once: a stage asked for while another thread
builds it is waited for; one nobody has started (a `--from` whose name only
a stage ARG gives, so the graph could not see it) is built by the thread
that asks. The first error stops the build: stages not started are not
started, running ones stop before their next step, and that error is raised.
Results do not depend on the order stages ran in: every stage's outcome is a
function of its inputs (its cache keys say so), never of its neighbours'.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

from .errors import BuildError

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")


class Cancelled(BuildError):
    """Another stage failed: this one stopped before its next step."""


class StageRunner(Generic[T]):
    def __init__(self, build: Callable[[int], T], label: Callable[[int], str]):
        self._build = build
        self._label = label
        self.results: dict[int, T] = {}
        self._lock = threading.Lock()
        self._running: dict[int, tuple[threading.Event, int]] = {}  # stage -> (done, thread id)
        self._waits: dict[int, int] = {}                            # thread id -> stage it waits for
        self.cancelled = threading.Event()

    def check(self) -> None:
        """Called before each step: stop when another stage failed."""
        if self.cancelled.is_set():
            raise Cancelled("cancelled: another stage failed")

    def result(self, index: int) -> T:
        """The stage's state, built now in this thread or waited for."""
        me = threading.get_ident()
        with self._lock:
            if index in self.results:
                return self.results[index]
            running = self._running.get(index)
            if running is None:
                done = threading.Event()
                self._running[index] = (done, me)
            else:
                done, owner = running
                self._refuse_cycle(index, owner, me)
                self._waits[me] = index
        if running is not None:
            done.wait()
            with self._lock:
                self._waits.pop(me, None)
                if index not in self.results:
                    raise Cancelled(f"stage {self._label(index)} failed")
                return self.results[index]
        try:
            state = self._build(index)
            with self._lock:
                self.results[index] = state
            return state
        finally:
            with self._lock:
                self._running.pop(index, None)
            done.set()

    def _refuse_cycle(self, index: int, owner: int, me: int) -> None:
        """Refuse to wait when the thread building `index` waits, through others, for a
        stage this thread builds: a cycle the graph could not see (names given by stage ARGs)."""
        chain = [index]
        for _ in range(len(self._running) + 1):
            if owner == me:
                names = [chain[-1], *chain]
                raise BuildError("circular dependency between stages: " + " -> ".join(map(self._label, names)))
            waited = self._waits.get(owner)
            if waited is None or waited not in self._running:
                return
            chain.append(waited)
            owner = self._running[waited][1]

    def run(self, graph: dict[int, list[int]], jobs: int) -> None:
        """Build every stage of `graph` (stage -> the stages it needs), dependencies first."""
        if jobs <= 1 or len(graph) <= 1:
            for i in graph:
                self.result(i)
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # several stages only

        pending = dict(graph)
        futures: dict[Future, int] = {}
        first: BaseException | None = None
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="soko-stage") as pool:
            while True:
                if first is None:
                    for i, deps in list(pending.items()):
                        if all(d in self.results for d in deps):
                            del pending[i]
                            futures[pool.submit(self.result, i)] = i
                if not futures:
                    break
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for f in finished:
                    futures.pop(f)
                    err = f.exception()
                    if err is None:
                        continue
                    self.cancelled.set()
                    if first is None or (isinstance(first, Cancelled) and not isinstance(err, Cancelled)):
                        first = err  # the failure itself, not a stage it stopped
        if first is not None:
            raise first
        if pending:  # cannot happen with an acyclic graph whose every stage ran
            raise BuildError("stages left unbuilt: " + ", ".join(self._label(i) for i in pending))
