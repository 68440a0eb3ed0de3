"""The command line as a whole: help for every option, whole command summaries, a lean start-up,
and output into a pipe whose reader has gone (`soko images | head -1`) ending quietly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
import pytest

from tests.conftest import REPO, need_root


def all_commands():
    from soko.cli import cli

    ctx = click.Context(cli)
    todo = [((), cli)]
    while todo:
        path, group = todo.pop()
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if isinstance(cmd, click.Group):
                todo.append(((*path, name), cmd))
            yield " ".join((*path, name)), cmd


def test_every_option_of_every_command_has_a_help_line():
    missing = [(name, p.opts) for name, cmd in all_commands() for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


def test_help_lists_whole_command_summaries():
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    for args in (["--help"], ["system", "--help"], ["volume", "--help"], ["image", "--help"]):
        out = subprocess.run([sys.executable, "-m", "soko", *args], capture_output=True, text=True, env=env).stdout
        commands = out.split("Commands:\n", 1)[1]
        assert "..." not in commands, out
    out = subprocess.run([sys.executable, "-m", "soko", "--help"], capture_output=True, text=True, env=env).stdout
    flat = " ".join(out.split())
    assert "Build an image from a Dockerfile (CONTEXT -: the Dockerfile from stdin and no context, as docker)." in flat
    for verb in ("system", "volume", "version", "info", "completion", "image"):
        assert f"\n  {verb} " in out, verb


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_start_up_stays_lean(args):
    """`soko --help` and `--version` import neither the heavy libraries nor the components."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "soko", *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines() if "|" in line}
    heavy = {"aiohttp", "rich", "pyroute2", "cryptography", "zstandard", "dockerfile_parse", "sqlite3",
             "builder", "runtime", "registry", "storage", "tarfile", "asyncio"}
    assert imported & heavy == set()


def _closed_reader(soko, *args, stdin=None) -> subprocess.CompletedProcess:
    """Run soko with its stdout a pipe whose reader is already gone."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([*soko.argv(), *args], stdout=w, stderr=subprocess.PIPE, stdin=stdin,
                              env=soko.env, timeout=300)
    finally:
        os.close(w)


def test_closed_pipe_ends_quietly_as_sigpipe(soko, busybox_rootfs):
    soko("import", busybox_rootfs, "bb:1")
    for args in (["images"], ["save", "bb:1"], ["history", "bb:1"], ["inspect", "bb:1"], ["--help"]):
        p = _closed_reader(soko, *args)
        assert p.returncode == -signal.SIGPIPE, (args, p.returncode, p.stderr)  # as `yes | head -1`
        assert p.stderr == b"", (args, p.stderr)


def test_build_into_a_closed_pipe_leaves_nothing_behind(soko, busybox_rootfs, tmp_path):
    """`soko build . | head -3`: the build stops quietly; no container, mount or process stays."""
    need_root()
    soko("import", busybox_rootfs, "bb:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb:1\nRUN for i in $(seq 1 3000); do echo line-$i; done; sleep 2\n")
    proc = subprocess.Popen(f"{' '.join(soko.argv())} build --no-cache {ctx} | head -3", shell=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=soko.env)
    out, err = proc.communicate(timeout=300)
    assert out.decode().splitlines()[0].startswith("#1 [1/2] FROM bb:1")
    assert b"Broken pipe" not in err and b"Errno" not in err, err
    with open("/proc/self/mountinfo") as f:
        assert str(soko.root) not in f.read()
    assert not list((soko.root / "containers").glob("*")) if (soko.root / "containers").exists() else True
    ps = subprocess.run(["pgrep", "-f", "seq 1 3000"], capture_output=True)
    assert ps.stdout == b""
