"""ARG scope across stages, as the Dockerfile reference states it
(moby/buildkit frontend/dockerfile/docs/reference.md, "ARG" > "Scope" and
"Understand how ARG and FROM interact"):

- an ARG goes out of scope at the end of its stage: a sibling stage does not
  see it (a stage built FROM another stage does: BuildKit's dispatchState.init
  appends the base stage's build args);
- ARGs before the first FROM are global: FROM lines see them, a stage sees one
  only after redeclaring it (`ARG NAME`, no value), and then with the global
  value; a stage's own default wins over the global one, a --build-arg over both;
- FROM lines see only global ARGs, never a stage's ARG or ENV.

Each rule is checked where a value shows: RUN's environment, ENV expansion,
and that it is absent where it must be.
"""
from __future__ import annotations

import pytest

from tests.builder.helpers import ImageFS, config_of, do_build, write_context


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {})


def env_of(fs: ImageFS, path: str) -> dict[str, str]:
    """A file written by `env` in a RUN step, as a dict."""
    data = fs.read(path)
    assert data is not None, f"{path} missing"
    return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)


def test_a_stage_arg_is_invisible_to_a_sibling_stage_but_not_to_a_child(store, ctx):
    do_build(store, ctx, """\
FROM busybox AS one
ARG ONLY_ONE=default
RUN env > /one.env
FROM one AS child
RUN env > /child.env
FROM busybox
COPY --from=one /one.env /
COPY --from=child /child.env /
ENV SEEN=${ONLY_ONE:-unset}
RUN env > /sibling.env
""", tags=["out"], build_args={"ONLY_ONE": "cli"})
    fs = ImageFS(store, "out")
    assert env_of(fs, "/one.env")["ONLY_ONE"] == "cli"
    assert env_of(fs, "/child.env")["ONLY_ONE"] == "cli"
    sibling = env_of(fs, "/sibling.env")
    assert "ONLY_ONE" not in sibling and sibling["SEEN"] == "unset"  # not even from --build-arg
    assert "SEEN=unset" in config_of(store, "out")["config"]["Env"]


GLOBAL_ARGS = """\
ARG G=global
ARG S=global-s
FROM busybox AS a
ENV BEFORE=${G:-unset}
RUN env > /before.env
ARG G
ARG S=stage-s
ENV AFTER=$G AFTER_S=$S
RUN env > /after.env
FROM busybox
COPY --from=a /before.env /after.env /
ENV B=${G:-unset}
RUN env > /b.env
"""


def test_global_args_are_seen_in_a_stage_only_after_it_redeclares_them(store, ctx):
    do_build(store, ctx, GLOBAL_ARGS, tags=["out"])
    fs = ImageFS(store, "out")
    before, after, b = env_of(fs, "/before.env"), env_of(fs, "/after.env"), env_of(fs, "/b.env")
    assert "G" not in before and before["BEFORE"] == "unset"
    assert after["G"] == "global" and after["AFTER"] == "global"
    assert after["S"] == "stage-s" and after["AFTER_S"] == "stage-s"  # the stage's own default wins
    assert "G" not in b and "S" not in b and b["B"] == "unset"      # the other stage never redeclared them
    cfg = config_of(store, "out")["config"]["Env"]
    assert "B=unset" in cfg and not any(e.startswith(("G=", "S=")) for e in cfg)  # an ARG is not an ENV


def test_a_build_arg_overrides_global_and_stage_defaults_where_declared(store, ctx):
    do_build(store, ctx, GLOBAL_ARGS, tags=["out"], build_args={"G": "cli", "S": "cli-s"})
    fs = ImageFS(store, "out")
    before, after, b = env_of(fs, "/before.env"), env_of(fs, "/after.env"), env_of(fs, "/b.env")
    assert "G" not in before and before["BEFORE"] == "unset"
    assert after["G"] == "cli" and after["AFTER"] == "cli"
    assert after["S"] == "cli-s" and after["AFTER_S"] == "cli-s"
    assert "G" not in b and b["B"] == "unset"


def test_from_lines_see_global_args_and_build_args_only(store, ctx):
    do_build(store, ctx, "FROM busybox\nRUN echo one > /marker\n", tags=["busybox:1"])
    # each stage copies from the one before, so it is built first and its ARG and ENV exist
    # when the next FROM line is expanded: they must not reach it
    text = """\
ARG TAG=latest
FROM busybox:$TAG AS first
ARG STAGE_BASE=busybox
ENV ENV_BASE=busybox
RUN echo "tag=${TAG:-unset}" > /tag.txt
FROM ${STAGE_BASE:-scratch} AS second
COPY --from=first /tag.txt /marker /
FROM ${ENV_BASE:-scratch} AS third
COPY --from=second /tag.txt /marker /
"""
    for target in ("second", "third"):
        do_build(store, ctx, text, tags=[target], target=target, build_args={"TAG": "1"})
        fs = ImageFS(store, target)
        assert fs.read("/marker") == b"one\n"     # the build arg reached the first FROM line
        assert fs.read("/tag.txt") == b"tag=unset\n"  # used in FROM, not redeclared: unset in the stage
        assert fs.stat("/bin") is None and len(fs.image.config.diff_ids) == 1  # FROM scratch
    do_build(store, ctx, text, tags=["first"], target="first")
    assert ImageFS(store, "first").read("/marker") is None  # the global default: busybox:latest
