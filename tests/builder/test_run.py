"""RUN through the runtime: environment, user, heredocs, failures, layers, cache."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from builder import BuildError, RunFailed
from tests.builder.helpers import ImageFS, do_build, write_context


@pytest.fixture
def ctx(tmp_path):
    return write_context(tmp_path / "ctx", {"f": "content"})


def test_environment_user_and_workdir(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox
ARG A=arg
ARG SHADOWED=arg
ENV SHADOWED=env E=1
RUN echo "A=$A SHADOWED=$SHADOWED E=$E PROXY=$HTTP_PROXY PATH=$PATH" > /env.txt
USER app
WORKDIR /home/app/work
RUN id -u > id.txt && pwd > pwd.txt
USER root
RUN ["/bin/sh", "-c", "echo exec $E > /exec.txt"]
""", tags=["r"], build_args={"HTTP_PROXY": "http://proxy:3128"})
    fs = ImageFS(store, "r")
    assert fs.read("/env.txt") == (b"A=arg SHADOWED=env E=1 PROXY=http://proxy:3128 "
                                   b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    assert fs.read("/home/app/work/id.txt") == b"1000\n" and fs.read("/home/app/work/pwd.txt") == b"/home/app/work\n"
    assert fs.owner("/home/app/work/id.txt") == (1000, 1000)
    assert fs.read("/exec.txt") == b"exec 1\n"
    history = [h["created_by"] for h in fs.image.config.data["history"]]
    assert ('RUN |2 A=arg SHADOWED=env /bin/sh -c echo "A=$A SHADOWED=$SHADOWED E=$E PROXY=$HTTP_PROXY '
            'PATH=$PATH" > /env.txt # buildkit') in history  # the proxy stays out of the history
    assert "RUN |2 A=arg SHADOWED=env /bin/sh -c echo exec $E > /exec.txt # buildkit" in history
    assert [e.text for e in b.events if e.kind == "output"] == []


def test_shell_instruction_and_heredocs(store, ctx):
    do_build(store, ctx, """\
FROM busybox
SHELL ["/bin/sh", "-e", "-c"]
RUN <<EOF
echo one > /one
echo two >> /one
EOF
RUN <<EOF
#!/bin/sh
echo "script $0" > /script
EOF
RUN <<EOF cat > /catted && <<X2 cat > /second
first "$HOME"
EOF
second
X2
""", tags=["h"])
    fs = ImageFS(store, "h")
    assert fs.read("/one") == b"one\ntwo\n"
    assert fs.read("/script") == b"script /dev/pipes/EOF\n"
    assert fs.read("/catted") == b'first "/root"\n' and fs.read("/second") == b"second\n"
    assert fs.stat("/dev/pipes") is None  # the mount point does not stay in the layer


def test_failing_run_reports_output_and_status_and_tags_nothing(store, ctx):
    events = []
    with pytest.raises(RunFailed) as e:
        from builder import BuildOptions, build

        (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo start\nRUN echo oops >&2; exit 3\nRUN echo never\n")
        build(store, BuildOptions(context=ctx, tags=["broken"]), events.append)
    assert str(e.value) == ('Dockerfile:3: process "/bin/sh -c echo oops >&2; exit 3" did not complete '
                            'successfully: exit code: 3')
    assert e.value.exit_code == 3 and e.value.output == ["oops"]
    assert "never" not in [ev.text for ev in events if ev.kind == "output"]
    assert [s.familiar() if hasattr(s, "familiar") else s.repository for s in store.list()] == ["busybox"]


EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # an empty tar


def test_run_layers_hold_changes_and_whiteouts(store, ctx):
    do_build(store, ctx, "FROM busybox\nRUN rm /etc/group && mkdir -p /new/d && echo x > /new/d/f\nRUN true\n",
             tags=["w"])
    img = store.resolve("w")
    assert len(img.manifest.layers) == 3  # `RUN true` changed nothing: an empty layer, as BuildKit makes
    assert img.config.diff_ids[-1] == EMPTY_LAYER
    assert img.config.data["history"][-1]["created_by"] == "RUN /bin/sh -c true # buildkit"
    assert "empty_layer" not in img.config.data["history"][-1]
    with tarfile.open(fileobj=store.blobs.open(img.manifest.layers[1].digest), mode="r:*") as t:
        names = sorted(t.getnames())
    assert names == ["etc", "etc/.wh.group", "new", "new/d", "new/d/f"]
    fs = ImageFS(store, "w")
    assert fs.stat("/etc/group") is None and fs.read("/etc/passwd") is not None


def test_run_on_a_bare_base_leaves_no_mount_points_in_its_layer(store, tmp_path):
    """FROM scratch has no /proc, /dev, /sys or /etc: the runtime's mount points stay out of the layers."""
    ctx = write_context(tmp_path / "bare", {"busybox": Path("/bin/busybox").read_bytes()})
    os.chmod(ctx / "busybox", 0o755)
    do_build(store, ctx, 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n'
                         'RUN ["/bin/busybox", "mkdir", "/made"]\n', tags=["bare"])
    img = store.resolve("bare")
    assert len(img.manifest.layers) == 3 and img.config.diff_ids[1] == EMPTY_LAYER  # `true` left nothing
    with tarfile.open(fileobj=store.blobs.open(img.manifest.layers[2].digest), mode="r:*") as t:
        assert t.getnames() == ["made"]


def test_network_modes(store, ctx):
    do_build(store, ctx, """\
FROM busybox
RUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /none.txt
RUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort > /default.txt
""", tags=["n"])
    fs = ImageFS(store, "n")
    assert fs.read("/none.txt") == b"lo\n"
    with open("/proc/net/dev") as f:
        host = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    assert fs.read("/default.txt").decode().split() == host  # default is the host's network for now


def test_run_cache_and_build_args(store, ctx):
    text = "FROM busybox\nARG V=1\nRUN echo $V > /v\nRUN echo after > /a\n"
    first = do_build(store, ctx, text)
    again = do_build(store, ctx, text)
    assert all(e.cached for e in again.steps) and first.result.image_id == again.result.image_id
    other = do_build(store, ctx, text, build_args={"V": "2"})
    assert [e.cached for e in other.steps] == [True, True, False, False]
    proxy = do_build(store, ctx, text, build_args={"HTTP_PROXY": "x"})
    assert all(e.cached for e in proxy.steps)  # undeclared proxies do not change keys


def test_unused_stage_never_runs(store, ctx):
    b = do_build(store, ctx, """\
FROM busybox AS broken
RUN exit 1
FROM busybox AS used
RUN echo used > /u
FROM busybox
COPY --from=used /u /u
""", tags=["m"])
    assert {e.stage for e in b.steps} == {"used", "stage-2"}
    assert ImageFS(store, "m").read("/u") == b"used\n"


def test_onbuild_run_in_child(store, ctx):
    do_build(store, ctx, "FROM busybox\nONBUILD RUN echo triggered > /trigger\n", tags=["base"])
    b = do_build(store, ctx, "FROM base\nRUN cat /trigger > /copy\n", tags=["kid"])
    fs = ImageFS(store, "kid")
    assert fs.read("/copy") == b"triggered\n"
    assert "OnBuild" not in fs.image.config.data["config"]
    assert [e.instruction for e in b.steps][1] == "ONBUILD RUN echo triggered > /trigger"


def test_reproducible_run_with_source_date_epoch(store, ctx):
    text = "FROM busybox\nRUN mkdir /d && echo x > /d/f && touch /d/g\nCOPY f /f\n"
    a = do_build(store, ctx, text, source_date_epoch=1700000000)
    b = do_build(store, ctx, text, source_date_epoch=1700000000, no_cache=True)
    assert a.result.manifest_digest == b.result.manifest_digest


def test_run_needs_a_shell_in_the_image(store, ctx):
    with pytest.raises(BuildError, match=r'^Dockerfile:2: process "/bin/sh -c echo hi" could not run: .*/bin/sh'):
        do_build(store, ctx, "FROM scratch\nRUN echo hi\n")
