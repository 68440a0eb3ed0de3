"""`soko build` through the real command: step lines, CACHED, -q, failures."""
from __future__ import annotations

import re

import pytest

from tests.conftest import need_root


@pytest.fixture
def ctx(soko, busybox_rootfs, tmp_path):
    need_root()
    soko("import", busybox_rootfs, "busybox:latest")
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "hello.txt").write_text("hello\n")
    (d / "Dockerfile").write_text("FROM busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copy\n"
                                  'CMD ["cat", "/copy"]\n')
    return d


def test_build_lines_cache_and_run(soko, ctx):
    out = soko("build", "-t", "app:1", "--progress", "plain", ctx).stdout.splitlines()
    assert out[0].startswith("#1 [1/4] FROM busybox")
    steps = [line for line in out if re.match(r"#\d+ \[[23]/4\] ", line)]
    assert steps == ["#2 [2/4] COPY hello.txt /hello.txt", "#3 [3/4] RUN cat /hello.txt > /copy"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", out[-1])
    again = soko("build", "-t", "app:1", ctx).stdout.splitlines()
    assert again[-1] == out[-1]
    assert [line for line in again if re.match(r"#\d+ \[[23]/4\] ", line)] == [s + " CACHED" for s in steps]
    assert soko("build", "-q", "-t", "app:1", ctx).stdout.strip() == out[-1]
    assert soko("run", "--rm", "app:1").stdout == "hello\n"


def test_build_failure_shows_output_and_tags_nothing(soko, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo going wrong; exit 3\n")
    for args in ((), ("-q",)):
        r = soko("build", *args, "-t", "broken:1", ctx, check=False)
        assert r.returncode == 1
        assert "going wrong" in r.stdout + r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("soko: Dockerfile:2:")
    assert "broken" not in soko("images").stdout
    (ctx / "Dockerfile").write_text("FROM busybox\nFROOM x\n")
    r = soko("build", ctx, check=False)
    assert r.returncode == 1 and r.stderr.startswith("soko: Dockerfile:2:")


def test_gc_keeps_build_cache_until_it_ages(soko, ctx):
    soko("build", "-t", "app:1", ctx)
    soko("rmi", "app:1")
    soko("gc", "--grace", "0")  # the cache holds its layers: a rebuild is all CACHED
    again = soko("build", "-t", "app:1", ctx).stdout.splitlines()
    assert all(line.endswith("CACHED") for line in again if re.match(r"#\d+ \[[23]/4\] ", line))
    soko("rmi", "app:1")
    out = soko("gc", "--grace", "0", "--cache-max-age", "0").stdout
    assert re.search(r"; \d+ snapshots, [1-9]\d* build cache entries", out), out
    rebuilt = soko("build", "-t", "app:1", ctx).stdout.splitlines()
    assert not any(line.endswith("CACHED") for line in rebuilt if re.match(r"#\d+ \[[23]/4\] ", line))


def test_cache_to_and_from_through_the_command(soko, ctx, tmp_path, busybox_rootfs):
    """A local cache exported by one store, used by another (the same base image moved over)."""
    from tests.conftest import SokoCLI

    cache = tmp_path / "cache"
    first = soko("build", "-t", "app:1", "--cache-to", f"type=local,dest={cache},mode=max", ctx).stdout
    assert (cache / "index.json").is_file()
    other = SokoCLI(tmp_path / "other")
    archive = tmp_path / "bb.tar"
    soko("save", "-o", archive, "busybox")
    other("load", "-i", archive)
    out = other("build", "-t", "app:1", "--cache-from", f"type=local,src={cache}", "-j", "1", ctx).stdout
    steps = [line for line in out.splitlines() if re.match(r"#\d+ \[[23]/4\] ", line)]
    assert steps and all(line.endswith("CACHED") for line in steps), out
    assert out.splitlines()[-1] == first.splitlines()[-1]  # the same image ID


def test_cache_flag_errors(soko, ctx):
    for flag, value in (("--cache-to", "foo"), ("--cache-to", "type=registry"), ("--cache-to", "type=s3,ref=a/b"),
                        ("--cache-to", "type=registry,ref=a/b,mode=medium"), ("--cache-from", "type=local"),
                        ("--cache-from", "type=registry,ref=Bad/Upper"), ("--cache-from", "type=local,src=/x,y=z")):
        r = soko("build", flag, value, ctx, check=False)
        assert r.returncode == 2, (flag, value, r.stderr)
        assert flag in r.stderr and "Traceback" not in r.stderr
    assert soko("build", "-j", "0", ctx, check=False).returncode == 2
    assert "busybox" in soko("images").stdout and "app" not in soko("images").stdout  # nothing was built


def test_cache_problems_warn_or_fail_after_storing(soko, ctx):
    r = soko("build", "-t", "app:1", "--cache-from", "type=registry,ref=127.0.0.1:1/none:cache", ctx)
    assert re.search(r"^WARNING: --cache-from 127\.0\.0\.1:1/none:cache: .*building without it$", r.stderr, re.M)
    r = soko("build", "-t", "app:2", "--cache-to", "type=registry,ref=127.0.0.1:1/none:cache", ctx, check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("soko: --cache-to 127.0.0.1:1/none:cache")
    image_id = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    assert "app" in soko("images").stdout and image_id[7:19] in soko("images").stdout  # stored and tagged
    r = soko("build", "-t", "app:3", "--cache-to", "type=registry,ref=127.0.0.1:1/none:cache,ignore-error=true", ctx)
    assert "WARNING: --cache-to" in r.stderr


def test_unused_build_arg_is_a_warning(soko, ctx):
    r = soko("build", "--build-arg", "NOPE=1", ctx)
    assert "WARNING: one or more build-args ['NOPE'] were not consumed" in r.stderr
