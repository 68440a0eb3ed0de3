"""`soko build` with nothing changed answers before loading the builder (builder/fastpath.py), and
shows exactly what the full build shows."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import REPO, need_root


def build(soko, *args) -> tuple[str, str, set[str]]:
    """(stdout, stderr without import times, the modules imported)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "soko", "--root", str(soko.root), "build", *args],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stderr.splitlines()
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    return p.stdout, "\n".join(line for line in lines if not line.startswith("import time:")), imported


def test_a_no_change_rebuild_skips_the_builder_and_shows_the_same(soko, busybox_rootfs, tmp_path):
    need_root()
    soko("import", busybox_rootfs, "busybox:latest")
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for i in range(20):
        (ctx / "src" / f"f{i}.txt").write_text(f"{i}\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nARG UNUSED\nCOPY src/ /src/\nRUN ls /src | wc -l > /n\n"
                                    "ENV A=1\n")
    time.sleep(0.05)  # past the racy window
    args = ("-t", "app:1", "--build-arg", "UNUSED=1", "--build-arg", "EXTRA=2", str(ctx))
    cold, _, imported = build(soko, *args)
    assert "builder.executor" in imported and not cold.splitlines()[2].endswith("CACHED")
    fast, fast_err, imported = build(soko, *args)
    assert not {"builder.executor", "builder.entry", "dockerfile_parse", "runtime"} & imported
    os.utime(ctx / "src" / "f3.txt")  # a new mtime: the fingerprint differs, the stat cache reads it again
    full, full_err, imported = build(soko, *args)
    assert "builder.executor" in imported
    assert fast == full and fast_err == full_err
    assert "EXTRA" in fast_err and all(line.endswith("CACHED") for line in fast.splitlines()[:-1])
    assert fast.splitlines()[-1] == cold.splitlines()[-1]
    q, _, _ = build(soko, "-q", *args)
    assert q == cold.splitlines()[-1] + "\n"


def test_a_multi_stage_rebuild_shows_what_the_full_build_shows(soko, busybox_rootfs, tmp_path):
    """The first build runs a stage that a cached build does not show (it is only read by
    COPY --from): the answer recorded by that build shows, and numbers, what a cached build does."""
    import shutil

    need_root()
    soko("import", busybox_rootfs, "busybox:latest")
    ctx = tmp_path / "ms"
    shutil.copytree(REPO / "fixtures" / "dockerfiles" / "multistage", ctx)
    time.sleep(0.05)
    cold, _, _ = build(soko, "-t", "ms", str(ctx))
    assert "[builder 2/4]" in cold
    fast, fast_err, imported = build(soko, "-t", "ms", str(ctx))
    assert "builder.executor" not in imported
    os.utime(ctx / "Dockerfile")
    full, full_err, imported = build(soko, "-t", "ms", str(ctx))
    assert "builder.executor" in imported
    assert (fast, fast_err) == (full, full_err) and "[builder" not in fast and fast.startswith("#1 [stage-3 1/5]")
