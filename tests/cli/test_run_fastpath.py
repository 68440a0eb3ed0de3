"""`soko run` with plain arguments skips click (soko/entry.py): its parser must read every command
line it accepts exactly as click does, hand every other one to click, and the command must then
behave as through click (status, messages, no click imported)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from soko.commands.run_options import parse, parse_run
from tests.cli.importtime_helpers import imported, imported_at_start, messages, soko_importtime
from tests.conftest import REPO

from .containers_helpers import bb  # noqa: F401 - bb is a fixture

ACCEPTED = [
    ["--rm", "img", "true"],
    ["--rm", "--network", "none", "img", "true"],
    ["img"],
    ["-it", "img"],
    ["-d", "-i", "-t", "--rm", "img", "sh", "-c", "echo --rm"],
    ["-de", "A=1", "img"],
    ["-e", "-x", "-e", "B=2", "--env=C=3", "img", "--name", "x"],
    ["--name=x", "--name", "y", "img"],
    ["-v", "/a:/b", "--volume=/c:/d", "vol:/e:ro", "--tmpfs", "/t", "img"],
    ["--pids-limit", "10", "--stop-timeout=3", "--health-retries", " 4", "img"],
    ["--runtime", "runc", "--pull=never", "img"],
    ["--runtime=crun", "--pull", "always", "img"],
    ["--net", "host", "-p", "80", "--publish=8080:80/udp", "-P", "img"],
    ["--read-only", "-l", "a=b", "--label", "c=d", "--security-opt", "seccomp=unconfined", "img"],
    ["--restart", "on-failure:3", "--no-healthcheck", "img", "--rm", "-d"],
    ["-h", "host", "-w", "/tmp", "-u", "1:1", "--entrypoint", "", "-m", "32m", "--cpus", "1.5", "img"],
    ["--network-alias", "a", "--health-cmd", "true", "--health-interval", "1s", "--health-timeout", "2s",
     "--health-start-period", "3s", "--stop-signal", "KILL", "img"],
    ["--user", "root", "--workdir=/", "--hostname", "h", "--memory", "1g", "--publish-all", "img", "a", "b"],
]

DECLINED = [
    ["--help"], ["--rm", "--help", "img"], ["--rm"], [], ["--rm=1", "img"], ["--pids-limit", "x", "img"],
    ["--runtime", "bogus", "img"], ["--pull", "ALWAYS", "img"], ["--env-file", "f", "img"], ["--", "img"],
    ["-", "true"], ["--bogus", "img"], ["-eB=2", "img"], ["-Z", "img"], ["-iZ", "img"], ["--name"],
    ["-e"], ["-ei", "x", "img"], ["--stop-timeout", "1.5", "img"],
]


def click_params(args: list[str]) -> dict:
    from soko.commands.run import run_cmd

    with run_cmd.make_context("run", list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("args", ACCEPTED, ids=" ".join)
def test_accepted_command_lines_read_as_click_reads_them(args):
    assert parse_run(args) == click_params(args)


@pytest.mark.parametrize("args", DECLINED, ids=" ".join)
def test_anything_else_is_left_to_click(args):
    assert parse_run(args) is None


def test_global_options(tmp_path):
    from soko.cli import cli

    afile = tmp_path / "file"
    afile.write_text("")
    for argv in (["run", "img"], ["--root", str(tmp_path), "run", "img"],
                 ["--root=/nonexistent", "--debug", "run", "img"], ["--debug", "--root", "run", "run", "img"]):
        root, debug, kw = parse(argv)
        with cli.make_context("soko", list(argv), resilient_parsing=True) as ctx:
            assert (Path(root) if root is not None else None, debug) == (ctx.params["root"], ctx.params["debug"])
        assert kw["image"] == "img"
    for argv in (["--version"], ["images"], ["--root", str(afile), "run", "img"], ["--root", "", "run", "img"],
                 ["--debug", "--debug", "run", "img"], ["--root"], ["run", "--help"], ["--help", "run", "img"],
                 ["--root", "a", "--root", "b", "run", "img"], ["create", "img"]):
        assert parse(argv) is None, argv


def test_plain_run_needs_no_click_and_ends_as_before(soko, bb):
    soko("run", "--rm", "--network", "none", bb, "true")  # the first run unpacks the image's snapshot
    p = soko_importtime(soko.root, "run", "--rm", "--network", "none", bb, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout, messages(p)) == (3, "out\n", "err")
    assert "click" not in imported(p)
    assert "_hashlib" not in imported(p)  # OpenSSL: a manifest, a config and a cache key are small data
    unused = {"ast", "dis", "tokenize", "ipaddress", "_bz2", "_lzma"} - imported_at_start()  # entry.ON_FIRST_USE
    assert unused & imported(p) == set()
    p = soko_importtime(soko.root, "run", "--rm", "--network", "none", bb, "no-such-command")
    assert (p.returncode, messages(p)) == (127, 'soko: exec: "no-such-command": executable file not found in $PATH')
    assert "click" not in imported(p)
    p = soko_importtime(soko.root, "run", "--rm", "--pull", "never", "no/such:image")
    assert (p.returncode, messages(p)) == (125, "soko: no such image: no/such:image")
    assert soko("ps", "-a", "-q").stdout == ""  # --rm left nothing


def test_unusual_command_lines_get_clicks_words(soko, bb):
    p = soko_importtime(soko.root, "run", "--pids-limit", "x", bb)
    assert p.returncode == 2
    assert "Error: Invalid value for '--pids-limit': 'x' is not a valid integer." in messages(p)
    assert "click" in imported(p)
    p = soko_importtime(soko.root, "run", "--rm", "--network", "none", bb, "true",
                        env={"_SOKO_COMPLETE": "bash_source"})
    assert "click" in imported(p) and "complete" in p.stdout  # click's shell completion script


def _gc_state_at_the_end(*argv: str) -> str:
    """soko's main with `argv`, reporting at exit whether the cyclic collector is on and how many
    objects start-up froze out of it."""
    code = ("import gc, os, sys\n"
            "import soko.entry as e\n"
            f"sys.argv = ['soko', *{list(argv)!r}]\n"
            "e.leave = lambda code: (print(gc.isenabled(), gc.get_freeze_count() > 10000, file=sys.stderr),"
            " os._exit(code))\n"
            "e.main()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    return p.stderr.strip().splitlines()[-1]


def test_the_collector_is_off_only_during_start_up(soko, bb):
    assert _gc_state_at_the_end("--version") == "True True"  # through click
    assert _gc_state_at_the_end("--root", str(soko.root), "run", "--rm", "--network", "none", bb, "true") \
        == "True True"


def test_modules_imported_on_first_use_work_as_the_real_ones():
    """entry.import_on_first_use: `import inspect` loads nothing until inspect is used, and then
    everything works as with the real module (a dataclass without a docstring gets its
    signature from inspect; an import after the first use gets the real module)."""
    code = """
import sys
from soko.entry import import_on_first_use
import_on_first_use(("inspect", "ipaddress"))
import dataclasses, inspect, ipaddress
assert "ast" not in sys.modules and "dis" not in sys.modules, "inspect was loaded"
@dataclasses.dataclass
class NoDoc:
    a: int
    b: str = "x"
print(NoDoc.__doc__)
print(inspect.signature(lambda x, y=2: None), ipaddress.ip_address("::1").version)
from inspect import isfunction
import inspect as again
print(isfunction(print), again is sys.modules["inspect"], "ast" in sys.modules)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["NoDoc(a: int, b: str = 'x')", "(x, y=2) 6", "False True True"]
