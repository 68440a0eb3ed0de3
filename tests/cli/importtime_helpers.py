"""Running soko as a user does while Python lists what it imports (-X importtime): the fast paths'
tests (test_run_fastpath.py, test_transfer_fastpath.py, test_build_parse.py) check that a plain
command line imports neither click nor what soko.entry imports only on first use."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def soko_importtime(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "soko", "--root", str(root), *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def imported(p: subprocess.CompletedProcess) -> set[str]:
    """The modules a run under -X importtime imported."""
    return {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


def messages(p: subprocess.CompletedProcess) -> str:
    """What it wrote on stderr, less the import times."""
    return "\n".join(line for line in p.stderr.splitlines() if not line.startswith("import time:"))


def imported_at_start() -> set[str]:
    """What Python imports before any of soko's code runs (site's modules)."""
    return imported(subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                                   text=True, env={**os.environ, "PYTHONPATH": str(REPO)}))
