"""Parallel stages: the graph first (cycles refused by name), independent stages side by side,
progress that says which stage a line belongs to, and the same image whatever the order."""
from __future__ import annotations

import time

import pytest

from builder import BuildError, BuildEvent, BuildOptions, build
from tests.builder.helpers import write_context

TWO_SLEEPERS = """\
FROM busybox AS left
RUN sleep 1 && echo left > /left
FROM busybox AS right
RUN sleep 1 && echo right > /right
FROM busybox
COPY --from=left /left /l
COPY --from=right /right /r
"""


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {"a.txt": "A"})


def timed_build(store, ctx, dockerfile: str, **kw) -> tuple[dict[str, tuple[float, float]], list[BuildEvent], float]:
    """(RUN steps' (start, end) by stage, the events, wall time)."""
    (ctx / "Dockerfile").write_text(dockerfile)
    spans: dict[str, list[float]] = {}
    events: list[BuildEvent] = []

    def on(e: BuildEvent) -> None:
        events.append(e)
        if e.instruction.startswith("RUN") and e.kind in ("step", "done"):
            spans.setdefault(e.stage or "", []).append(time.monotonic())

    t0 = time.monotonic()
    build(store, BuildOptions(context=ctx, **kw), on)
    return {k: (v[0], v[1]) for k, v in spans.items()}, events, time.monotonic() - t0


def test_independent_stages_overlap(store, ctx):
    spans, events, wall = timed_build(store, ctx, TWO_SLEEPERS, jobs=2, no_cache=True)
    (l0, l1), (r0, r1) = spans["left"], spans["right"]
    assert l1 - l0 >= 1 and r1 - r0 >= 1
    assert l0 < r1 and r0 < l1, f"the sleeps did not overlap: left {l0:.2f}-{l1:.2f}, right {r0:.2f}-{r1:.2f}"
    assert min(l1, r1) - max(l0, r0) > 0.5  # most of a second side by side
    # one at a time, the same build takes both sleeps in turn (wall times are not compared: on a
    # loaded machine the rest of a build varies by more than the second the overlap saves)
    spans1, _, wall1 = timed_build(store, ctx, TWO_SLEEPERS, jobs=1, no_cache=True)
    (l0, l1), (r0, r1) = spans1["left"], spans1["right"]
    assert l1 <= r0 or r1 <= l0
    assert wall1 >= 2.0


def test_progress_names_the_stage_of_every_line(store, ctx):
    df = TWO_SLEEPERS.replace("sleep 1 && ", "")
    df = df.replace("echo left > /left", "for i in 1 2 3; do echo left$i; sleep 0.2; done; echo > /left")
    df = df.replace("echo right > /right", "for i in 1 2 3; do echo right$i; sleep 0.2; done; echo > /right")
    _, events, _ = timed_build(store, ctx, df, jobs=2)
    stage_of = {e.step: e.stage for e in events if e.kind == "step"}
    outputs = [(stage_of[e.step], e.text) for e in events if e.kind == "output"]
    assert sorted(outputs) == sorted([("left", f"left{i}") for i in (1, 2, 3)] +
                                     [("right", f"right{i}") for i in (1, 2, 3)])
    steps = [e.step for e in events if e.kind == "step"]
    assert steps == list(range(1, len(steps) + 1))  # #N in the order the lines come
    headers = [e.header() for e in events if e.kind == "step"]
    assert "#1 [left 1/2] FROM busybox AS left" in headers or "#1 [right 1/2] FROM busybox AS right" in headers
    for e in events:
        if e.kind == "done":  # a stage's end line carries that stage's own step number
            assert stage_of[e.step] == e.stage


def test_same_image_whatever_the_order(store, ctx):
    df = """\
FROM busybox AS base
RUN echo base > /base && mkdir /out
FROM base AS one
RUN sleep 0.3; echo one > /out/one
FROM base AS two
COPY a.txt /out/two
RUN echo two >> /out/two
FROM busybox AS three
RUN echo three > /three
FROM base
COPY --from=one /out/ /out/
COPY --from=two /out/ /out/
COPY --from=three /three /out/three
RUN ls /out > /listing
"""
    (ctx / "Dockerfile").write_text(df)
    digests = []
    for jobs in (1, 4, 1, 4):  # every step run again (no cache), stages in whatever order they finish
        r = build(store, BuildOptions(context=ctx, jobs=jobs, no_cache=True,
                                      build_args={"SOURCE_DATE_EPOCH": "1700000000"}))
        digests.append(r.manifest_digest)
    assert len(set(digests)) == 1, digests


def test_a_cycle_is_refused_by_name_before_anything_runs(store, ctx):
    events: list[BuildEvent] = []
    (ctx / "Dockerfile").write_text("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n"
                                    "COPY --from=c /x /x\nFROM busybox AS c\nCOPY --from=a /x /x\n")
    with pytest.raises(BuildError, match=r"^circular dependency between stages: c -> a -> b -> c$"):
        build(store, BuildOptions(context=ctx), events.append)
    assert not [e for e in events if e.kind == "step"]
    (ctx / "Dockerfile").write_text("FROM busybox AS self\nRUN --mount=from=self,target=/m true\n")
    with pytest.raises(BuildError, match=r"^circular dependency between stages: self -> self$"):
        build(store, BuildOptions(context=ctx), events.append)


def test_copy_from_a_later_stage_gets_all_of_it(store, ctx):
    _, _, _ = timed_build(store, ctx, "FROM busybox\nCOPY --from=later /made /made\n"
                                      "FROM busybox AS later\nRUN echo one > /made\nRUN echo two >> /made\n",
                          target="0", tags=["fwd"])
    from tests.builder.helpers import ImageFS

    assert ImageFS(store, "fwd").read("/made") == b"one\ntwo\n"


def test_a_failing_stage_stops_the_others(store, ctx):
    events: list[BuildEvent] = []
    (ctx / "Dockerfile").write_text("FROM busybox AS slow\nRUN sleep 1.5\nRUN echo should-not-run\n"
                                    "FROM busybox AS bad\nRUN exit 7\n"
                                    "FROM busybox\nCOPY --from=slow /bin/sh /a\nCOPY --from=bad /bin/sh /b\n")
    with pytest.raises(BuildError, match=r"Dockerfile:5: .*exit code: 7"):
        build(store, BuildOptions(context=ctx, jobs=2, no_cache=True), events.append)
    assert not [e for e in events if e.kind == "step" and "should-not-run" in e.instruction]
    assert not [e for e in events if e.kind == "step" and (e.stage or "").startswith("stage-2")]
