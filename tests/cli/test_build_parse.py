"""`soko build` with plain arguments skips click (soko/entry.py, build_options.py): its parser must
read every command line it accepts exactly as click does, leave every other one to click (help,
bad values, usage errors), and the build must then print and fail as through click, without
importing click."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from soko.commands.build_options import parse_build
from tests.cli.importtime_helpers import imported, imported_at_start, messages, soko_importtime
from tests.conftest import need_root

ACCEPTED = [
    ["CTX"], ["-t", "app:1", "CTX"], ["-q", "-t", "app", "CTX"], ["CTX", "-t", "app", "--no-cache"],
    ["-t", "a", "--tag=b", "-t", "c", "CTX"], ["-qt", "a", "CTX"], ["-f", "CTX/Dockerfile", "CTX"],
    ["--file=-", "CTX"], ["-f", "-", "CTX"], ["--build-arg", "A=1", "--build-arg=B=", "CTX", "--build-arg", "C=x=y"],
    ["--build-arg", "SOKO_TEST_SET_ARG", "CTX"], ["--target", "builder", "--label", "a=b", "--label=c=", "CTX"],
    ["--network", "none", "--compression=zstd", "--progress", "plain", "CTX"], ["--network=host", "CTX"],
    ["--secret", "id=s,src=/etc/hostname", "--ssh", "default", "-o", "type=oci,dest=/tmp/x.tar", "CTX"],
    ["--push", "-j", "2", "--jobs= 3", "CTX"], ["-j", "100000", "CTX"], ["--progress=quiet", "--quiet", "CTX"],
    ["--cache-from", "type=local,src=/tmp/c", "--cache-to", "type=local,dest=/tmp/c", "CTX"],
    ["--cache-from", "r.example/x:cache", "CTX"], ["CTX/Dockerfile"], ["--output", "-t", "CTX"],
]

DECLINED = [
    [], ["--help"], ["CTX", "--help"], ["-t", "app"], ["CTX", "CTX"], ["/nonexistent/soko/ctx"], ["-"],
    ["-f", "-", "-"], ["--", "CTX"], ["CTX", "--"], ["-tapp", "CTX"], ["-Z", "CTX"], ["--bogus", "CTX"], ["-t"],
    ["--no-cache=1", "CTX"], ["--network", "bridge", "CTX"], ["--progress", "PLAIN", "CTX"], ["-j", "0", "CTX"],
    ["-j", "x", "CTX"], ["-j", "1.5", "CTX"], ["--compression", "none", "CTX"], ["-jq", "2", "CTX"],
    ["--build-arg", "SOKO_TEST_UNSET_ARG", "CTX"], ["--label", "x", "CTX"], ["--cache-from", "type=nfs", "CTX"],
    ["--cache-to", "r.example/x", "CTX"],
]


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    """A context directory with a Dockerfile; SOKO_TEST_SET_ARG set, SOKO_TEST_UNSET_ARG not."""
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text("FROM busybox\n")
    monkeypatch.setenv("SOKO_TEST_SET_ARG", "from-env")
    monkeypatch.delenv("SOKO_TEST_UNSET_ARG", raising=False)
    return d


def _args(args: list[str], ctx: Path) -> list[str]:
    return [a.replace("CTX", str(ctx)) for a in args]


def click_params(args: list[str]) -> dict:
    from soko.commands.build import build_cmd

    with build_cmd.make_context("build", list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("args", ACCEPTED, ids=" ".join)
def test_accepted_command_lines_read_as_click_reads_them(args, ctx):
    args = _args(args, ctx)
    assert parse_build(args) == click_params(args)


@pytest.mark.parametrize("args", DECLINED, ids=" ".join)
def test_anything_else_is_left_to_click(args, ctx):
    assert parse_build(_args(args, ctx)) is None


def test_the_command_line_a_usage_error_is_for_is_left_to_click(ctx):
    """Lines click parses but build_cmd refuses as usage errors (build_core.usage_error)."""
    from soko.commands.build_core import usage_error

    for args in (["--build-arg", "SOKO_TEST_UNSET_ARG", "CTX"], ["--label", "x", "CTX"],
                 ["--cache-from", "type=nfs", "CTX"]):
        args = _args(args, ctx)
        assert usage_error(click_params(args)) is not None and parse_build(args) is None
    assert usage_error(click_params(["-f", "-", "-"])) == "the Dockerfile and the context cannot both come from stdin"


def _context(soko, busybox_rootfs, tmp_path: Path, dockerfile: str) -> Path:
    """A store holding busybox, and a context of one file (src/a.txt) built by `dockerfile`."""
    need_root()
    soko("import", busybox_rootfs, "busybox:latest")
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_plain_build_needs_no_click_and_ends_as_through_click(soko, busybox_rootfs, tmp_path):
    ctx = _context(soko, busybox_rootfs, tmp_path, "FROM busybox\nARG UNUSED\nCOPY src/ /src/\nENV A=1\n")
    time.sleep(0.05)  # past the racy window: the first build records its answer
    plain = ("-t", "app:1", "--build-arg", "EXTRA=2", str(ctx))
    clicks = ("-t", "app:1", "--build-arg", "EXTRA=2", "--", str(ctx))  # `--`: click's to parse
    cold = soko_importtime(soko.root, "build", *plain)
    assert cold.returncode == 0, messages(cold)
    assert "click" not in imported(cold) and "builder.executor" in imported(cold)
    # nor does a build that runs its steps (every dataclass on its way has a docstring): inspect
    # with ast and dis cost ~4 ms, and inspect.signature per class more (tokenize comes with logging)
    assert {"inspect", "ast", "dis"} & (imported(cold) - imported_at_start()) == set()
    # its layers are stored uncompressed: no codec is loaded (zstandard brings platform along)
    assert {"zstandard", "isal", "platform"} & (imported(cold) - imported_at_start()) == set()
    # nor --cache-from/--cache-to's machinery, which it does not use
    assert {"builder.cacheimport", "builder.cacheexport", "builder.cacheformat"} & imported(cold) == set()
    fast, slow = soko_importtime(soko.root, "build", *plain), soko_importtime(soko.root, "build", *clicks)
    assert "click" not in imported(fast) and "click" in imported(slow)
    unused = {"inspect", "ast", "dis", "tokenize", "ipaddress", "_bz2", "_lzma"} - imported_at_start()
    assert unused & imported(fast) == set()
    assert (fast.returncode, fast.stdout, messages(fast)) == (slow.returncode, slow.stdout, messages(slow))
    assert fast.stdout.splitlines()[-1] == cold.stdout.splitlines()[-1]
    assert "EXTRA" in messages(fast) and all(line.endswith("CACHED") for line in fast.stdout.splitlines()[:-1])
    # an error the builder reports: one line, status 1, the same either way
    fast, slow = (soko_importtime(soko.root, "build", "-o", "type=tar", *args) for args in (plain, clicks))
    assert "click" not in imported(fast)
    assert (fast.returncode, fast.stdout, messages(fast)) == (slow.returncode, slow.stdout, messages(slow))
    assert fast.returncode == 1 and messages(fast).startswith("soko: --output type must be oci or docker")
    # usage errors are click's: usage line, message, status 2
    p = soko_importtime(soko.root, "build", "--label", "x", str(ctx))
    assert p.returncode == 2 and "click" in imported(p)
    assert messages(p).splitlines()[0].startswith("Usage: ")
    assert messages(p).splitlines()[-1] == "Error: --label 'x': expected KEY=VALUE"
    p = soko_importtime(soko.root, "build", str(tmp_path / "none"))
    assert p.returncode == 2 and f"Path '{tmp_path / 'none'}' does not exist." in messages(p)


def test_a_one_file_edit_rebuild_imports_only_what_it_uses(soko, busybox_rootfs, tmp_path):
    """The bench's edit scenario in small: the base is unpacked already, one COPY and the RUN after
    it run again. Neither unpacking nor reading layer blobs is needed (storage.layers loads them on
    first use), nor a codec, nor --cache-from's machinery."""
    ctx = _context(soko, busybox_rootfs, tmp_path, "FROM busybox\nCOPY src/ /src/\nRUN cat /src/a.txt > /out\n")
    first = soko_importtime(soko.root, "build", "-q", str(ctx))
    assert first.returncode == 0, messages(first)
    (ctx / "src" / "a.txt").write_text("edited\n")
    edit = soko_importtime(soko.root, "build", "-q", str(ctx))
    assert edit.returncode == 0, messages(edit)
    assert edit.stdout != first.stdout and "runtime.build" in imported(edit)
    unused = {"storage.layers_apply", "storage.layers_stream", "zstandard", "isal", "inspect", "ast", "dis",
              "traceback", "tokenize", "tempfile", "random", "concurrent.futures", "builder.cacheimport",
              "builder.cacheexport", "click"} - imported_at_start()
    assert unused & imported(edit) == set()
