"""`soko build --secret/--ssh`, `soko builder prune` and `soko gc` for cache mounts, through the real command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


from tests.cli.test_build_cli import ctx  # noqa: E402,F401  (busybox imported, a context; each test writes its Dockerfile)


def test_secret_flags_from_file_env_and_bare_id(soko, ctx, tmp_path):
    (tmp_path / "pw").write_text("from-file")
    (ctx / "Dockerfile").write_text("FROM busybox\n"
                                    "RUN --mount=type=secret,id=a --mount=type=secret,id=B_TOKEN,env=B "
                                    "--mount=type=secret,id=c,required cat /run/secrets/a /run/secrets/c && echo \" $B\"\n")
    r = soko("build", "--progress", "plain", "--no-cache", "--secret", f"id=a,src={tmp_path / 'pw'}",
             "--secret", "id=B_TOKEN", "--secret", "id=c,env=C_VAR", ctx,
             env={"B_TOKEN": "from-env", "C_VAR": "+c"})
    assert "from-file+c from-env" in r.stdout
    bad = soko("build", "--secret", "id=a,src=/nonexistent/pw", ctx, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("--secret id=a: cannot read /nonexistent/pw: no such file")
    missing = soko("build", "--no-cache", ctx, check=False)
    assert missing.returncode == 1
    assert "Dockerfile:2: secret c is required but was not provided" in missing.stderr


def test_ssh_flag_default_needs_an_agent(soko, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=ssh true\n")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    r = subprocess.run([sys.executable, "-m", "soko", "--root", str(soko.root), "build", "--ssh", "default", str(ctx)],
                       capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and "SSH_AUTH_SOCK is not set" in r.stderr
    r = soko("build", "--ssh", "default=/nonexistent.sock", ctx, check=False)
    assert r.returncode == 1 and "not an agent socket" in r.stderr


def test_builder_prune_and_gc_remove_cache_mounts(soko, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=cache,target=/c dd if=/dev/zero of=/c/blob bs=1k count=64 "
                                    "2>/dev/null && ls /c\n")
    soko("build", "-t", "c:1", ctx)
    mounts = soko.root / "builder" / "cache-mounts"
    assert [p.name for p in mounts.iterdir() if not p.name.endswith(".lock")]
    no = soko("builder", "prune", input="n\n", check=False)
    assert no.returncode == 1 and any(mounts.iterdir())  # declined: nothing removed
    kept = soko("builder", "prune", "-f", "--filter", "until=24h")
    assert "Total reclaimed space: 0B" in kept.stdout and any(mounts.iterdir())  # used just now
    out = soko("builder", "prune", "-f").stdout
    assert out.startswith("Deleted build cache objects:\n") and "Total reclaimed space: 6" in out  # 64 KiB + dir
    assert not [p for p in mounts.iterdir() if not p.name.endswith(".lock")]
    soko("build", "--no-cache", "-t", "c:1", ctx)
    assert [p for p in mounts.iterdir() if not p.name.endswith(".lock")]
    soko("gc", "--cache-max-age", "0")
    assert not [p for p in mounts.iterdir() if not p.name.endswith(".lock")]
    soko("build", "--no-cache", "-t", "c:1", ctx)
    out = soko("system", "prune", "-f").stdout  # the build cache is one of system prune's parts
    assert "Deleted build cache objects:\n" in out
    assert not [p for p in mounts.iterdir() if not p.name.endswith(".lock")]
    bad = soko("builder", "prune", "-f", "--filter", "label=x", check=False)
    assert bad.returncode == 2 and "only until=DURATION" in bad.stderr


def test_builder_prune_all_drops_step_results_too(soko, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\n")
    run_line = "#2 [2/2] RUN echo one > /one"
    soko("build", "-t", "p:1", ctx)
    assert run_line + " CACHED" in soko("build", "--progress", "plain", "-t", "p:1", ctx).stdout
    soko("builder", "prune", "-f")  # the layer is p:1's: not dangling, kept
    assert run_line + " CACHED" in soko("build", "--progress", "plain", "-t", "p:1", ctx).stdout
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo two > /two\n")
    soko("build", "-t", "p:1", ctx)  # p:1 moves on: the first RUN's layer is dangling now
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\n")
    soko("builder", "prune", "-f")
    assert run_line + "\n" in soko("build", "--progress", "plain", "-t", "p:1", ctx).stdout
    soko("builder", "prune", "-f", "-a")
    assert run_line + "\n" in soko("build", "--progress", "plain", "-t", "p:1", ctx).stdout


def test_locked_cache_mounts_serialize_two_concurrent_builds(soko, ctx):
    """Two `soko build` processes at once: with sharing=locked their RUN steps never overlap;
    with sharing=shared (the check that this test can fail) they do."""
    def run_pair(sharing: str) -> list[tuple[float, float]]:
        (ctx / "Dockerfile").write_text(
            "FROM busybox\nARG WHO\n"
            f"RUN --mount=type=cache,id=pair-{sharing},target=/c,sharing={sharing} "
            "s=$(cut -d' ' -f1 /proc/uptime); sleep 1.5; echo \"$s $(cut -d' ' -f1 /proc/uptime)\" >> /c/spans\n"
            f"RUN --mount=type=cache,id=pair-{sharing},target=/c cat /c/spans\n")
        cmd = [sys.executable, "-m", "soko", "--root", str(soko.root), "build", "--no-cache", "--progress", "plain"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen([*cmd, "--build-arg", f"WHO={w}", str(ctx)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for w in ("a", "b")]
        for p in procs:
            out, err = p.communicate(120)
            assert p.returncode == 0, err
        (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN --mount=type=cache,id=pair-{sharing},target=/c cat /c/spans\n")
        lines = [ln for ln in soko("build", "--no-cache", "--progress", "plain", ctx).stdout.splitlines()
                 if ln.startswith("#2 ") and "[" not in ln and "DONE" not in ln]
        return sorted(tuple(map(float, ln.split()[1:3])) for ln in lines)  # type: ignore[misc]

    locked = run_pair("locked")
    assert len(locked) == 2 and locked[0][1] <= locked[1][0], locked
    shared = run_pair("shared")
    assert len(shared) == 2 and shared[0][1] > shared[1][0], shared
