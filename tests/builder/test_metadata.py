"""Builds made of metadata steps only: config edits, ARG scope, cache, history."""
from __future__ import annotations

import pytest

from builder import BuildError, DockerfileError
from tests.builder.helpers import config_of, do_build, import_busybox, write_context


@pytest.fixture
def store(store_root):
    from storage.images import ImageStore

    return ImageStore(store_root)


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {})


def test_every_metadata_instruction(store, ctx):
    do_build(store, ctx, """\
FROM scratch
ENV A=1 B="two words" C=${A:+set}
ENV OLD form with spaces
LABEL "com.example.vendor"="ACME Inc" version=$A
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data", "/logs"]
VOLUME /more
USER app:staff
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5m --timeout=3s --retries=2 CMD ["probe", "-x"]
SHELL ["/bin/bash", "-c"]
CMD run "this"
ENTRYPOINT ["/entry"]
ONBUILD RUN echo child
MAINTAINER someone@example.com
""", tags=["meta:1"])
    data = config_of(store, "meta:1")
    cfg = data["config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1",
                          "B=two words", "C=", "OLD=form with spaces"]  # A was not set yet
    assert cfg["Labels"] == {"com.example.vendor": "ACME Inc", "version": "1"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}, "/more": {}}
    assert cfg["User"] == "app:staff"
    assert cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Healthcheck"] == {"Test": ["CMD", "probe", "-x"], "Interval": 300_000_000_000,
                                  "Timeout": 3_000_000_000, "Retries": 2}
    assert cfg["Shell"] == ["/bin/bash", "-c"]
    assert cfg["Cmd"] == ["/bin/bash", "-c", 'run "this"']  # CMD before ENTRYPOINT in this stage: kept
    assert cfg["Entrypoint"] == ["/entry"]
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert data["author"] == "someone@example.com"
    created_by = [h["created_by"] for h in data["history"]]
    assert created_by[0] == "ENV A=1 B=two words C="
    assert "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]" in created_by
    assert "VOLUME [/data /logs]" in created_by
    assert 'CMD ["/bin/bash" "-c" "run \\"this\\""]' in created_by
    assert ('HEALTHCHECK &{["CMD" "probe" "-x"] "5m0s" "3s" "0s" \'\\x02\'}') in created_by  # 20.10's three durations
    assert all(h["empty_layer"] for h in data["history"])
    assert data["rootfs"]["diff_ids"] == []


def test_env_uses_values_from_before_the_instruction(store, ctx):
    do_build(store, ctx, "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n", tags=["e"])
    env = config_of(store, "e")["config"]["Env"]
    assert "def=hello" in env and "ghi=bye" in env and "abc=bye" in env


def test_arg_scope(store, ctx):
    do_build(store, ctx, """\
ARG GLOBAL=g
ARG OVERRIDDEN=default
FROM scratch
LABEL before=${GLOBAL:-unset} user=${username:-some_user}
ARG GLOBAL
ARG username
ARG OVERRIDDEN=stage-default
ARG WITHDEFAULT=d
ENV WITHDEFAULT=env-wins
LABEL after=$GLOBAL user2=$username over=$OVERRIDDEN wd=$WITHDEFAULT plat=${TARGETPLATFORM:-none}
ARG TARGETARCH
LABEL arch=$TARGETARCH
""", tags=["a"], build_args={"username": "what_user", "OVERRIDDEN": "cli"})
    labels = config_of(store, "a")["config"]["Labels"]
    import platform as p
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(p.machine(), p.machine())
    assert labels == {"before": "unset", "user": "some_user", "after": "g", "user2": "what_user",
                      "over": "cli", "wd": "env-wins", "plat": "none", "arch": arch}


def test_global_args_in_from_and_stage_inheritance(store, ctx, busybox_rootfs):
    import_busybox(store, busybox_rootfs, "busybox:1")
    do_build(store, ctx, """\
ARG TAG=1
FROM busybox:$TAG AS base
ARG INHERITED=yes
FROM base
LABEL got=$INHERITED
""", tags=["inh"])
    data = config_of(store, "inh")
    assert data["config"]["Labels"] == {"got": "yes"}
    assert data["config"]["Cmd"] == ["sh"]
    assert len(data["rootfs"]["diff_ids"]) == 1


def test_entrypoint_resets_inherited_cmd(store, ctx, busybox_rootfs):
    import_busybox(store, busybox_rootfs)
    do_build(store, ctx, "FROM busybox\nENTRYPOINT [\"/bin/echo\"]\n", tags=["ep"])
    cfg = config_of(store, "ep")["config"]
    assert cfg["Entrypoint"] == ["/bin/echo"] and "Cmd" not in cfg


def test_onbuild_triggers_run_in_children_and_are_not_inherited(store, ctx):
    do_build(store, ctx, "FROM scratch\nONBUILD ENV FROM_PARENT=1\nONBUILD LABEL x=y\n", tags=["parent"])
    b = do_build(store, ctx, "FROM parent\nLABEL own=1\n", tags=["child"])
    cfg = config_of(store, "child")["config"]
    assert "FROM_PARENT=1" in cfg["Env"] and cfg["Labels"] == {"x": "y", "own": "1"}
    assert "OnBuild" not in cfg
    assert [e.instruction for e in b.steps][:3] == ["FROM parent", "ONBUILD ENV FROM_PARENT=1", "ONBUILD LABEL x=y"]


def test_rebuild_is_fully_cached_and_gives_the_same_id(store, ctx):
    text = "FROM scratch\nENV A=1\nLABEL b=2\nCMD [\"x\"]\n"
    first = do_build(store, ctx, text, tags=["c"])
    again = do_build(store, ctx, text, tags=["c"])
    assert not any(e.cached for e in first.steps[1:])
    assert all(e.cached for e in again.steps)
    assert first.result.image_id == again.result.image_id
    changed = do_build(store, ctx, text.replace("LABEL b=2", "LABEL b=3"))
    assert [e.cached for e in changed.steps] == [True, True, False, False]
    nocache = do_build(store, ctx, text, no_cache=True)
    assert not any(e.cached for e in nocache.steps[1:])


def test_build_arg_change_misses_at_first_use(store, ctx):
    text = "FROM scratch\nARG V\nENV X=1\nLABEL v=$V\n"
    do_build(store, ctx, text, build_args={"V": "1"})
    b = do_build(store, ctx, text, build_args={"V": "2"})
    assert [e.cached for e in b.steps] == [True, True, True, False]


def test_source_date_epoch_makes_ids_reproducible(store, ctx):
    text = "FROM scratch\nENV A=1\nCMD [\"x\"]\n"
    a = do_build(store, ctx, text, source_date_epoch=1700000000)
    b = do_build(store, ctx, text, source_date_epoch=1700000000, no_cache=True)
    assert a.result.image_id == b.result.image_id
    cfg = store.resolve(a.result.manifest_digest).config.data
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in cfg["history"]} == {"2023-11-14T22:13:20Z"}


def test_cli_labels_and_tags(store, ctx):
    b = do_build(store, ctx, "FROM scratch\nLABEL a=1\n", tags=["one:x", "two"], labels={"b": "2", "a": "cli"})
    assert b.result.tags == ["one:x", "two:latest"]
    assert config_of(store, "two")["config"]["Labels"] == {"a": "cli", "b": "2"}


def test_errors(store, ctx):
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: FROM nope: no such image"):
        do_build(store, ctx, "ARG X\nFROM nope\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: invalid port"):
        do_build(store, ctx, "FROM scratch\nEXPOSE 80/xyz1\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: X: must be set"):
        do_build(store, ctx, "FROM scratch\nENV A=\"${X?must be set}\"\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: invalid signal"):
        do_build(store, ctx, "FROM scratch\nSTOPSIGNAL SIGFOO\n")
    with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
        do_build(store, ctx, "FROM scratch\n", target="nope")
    with pytest.raises(BuildError, match="invalid tag"):
        do_build(store, ctx, "FROM scratch\n", tags=["UPPER:case"])
    assert store.list() == []  # nothing was committed or tagged


def test_unused_stages_are_not_built(store, ctx):
    b = do_build(store, ctx, "FROM scratch AS a\nENV A=1\nFROM nosuchimage AS broken\n"
                             "FROM a AS final\nLABEL x=1\n", target="final")
    assert [e.stage for e in b.steps] == ["a", "a", "final", "final"]


def test_unused_build_arg_warns(store, ctx):
    b = do_build(store, ctx, "FROM scratch\n", build_args={"NOPE": "1", "HTTP_PROXY": "x"})
    assert b.result.warnings == ["one or more build-args ['NOPE'] were not consumed"]


def test_details_as_buildkit_writes_them(store, ctx, busybox_rootfs):
    """What the Docker differential (tests/interop/test_build_parity.py) found, pinned without Docker."""
    from tests.conftest import need_root

    need_root()
    import_busybox(store, busybox_rootfs)
    b = do_build(store, ctx, "FROM busybox\nARG SET=1\nARG UNSET\nONBUILD RUN echo later\nEXPOSE 80 80/tcp\n"
                             "RUN env | grep -c HOSTNAME; hostname\nFROM scratch AS s\n", target="0", tags=["d"])
    hist = [h["created_by"] for h in config_of(store, "d")["history"]]
    assert "RUN |2 SET=1 UNSET= /bin/sh -c env | grep -c HOSTNAME; hostname # buildkit" in hist
    assert not [h for h in hist if h.startswith("ONBUILD")]  # in the config, not in the history
    assert config_of(store, "d")["config"]["OnBuild"] == ["RUN echo later"]
    assert "EXPOSE map[80/tcp:{}]" in hist
    assert b.output == ["0", "buildkitsandbox"]
    do_build(store, ctx, "FROM scratch\nLABEL a=b\n", tags=["s"])
    assert config_of(store, "s")["config"]["WorkingDir"] == "/"
