"""The `soko` command as users get it: `pip install .` into a venv of its own (bench/out/venv).

The development .venv has an editable install, whose import hook costs every command a few
milliseconds that an installed soko does not pay; benchmarks time the installed command.
Reinstalled (without its dependencies, a few seconds) whenever a source file is newer than
the last install. pip compiles the byte-code, as a regular install has it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "bench" / "out" / "venv"
PACKAGES = ("storage", "builder", "runtime", "registry", "soko")


def _newest_source() -> float:
    newest = (REPO / "pyproject.toml").stat().st_mtime
    for pkg in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(REPO / pkg):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in filenames:
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
    return newest


def installed_soko(quiet: bool = True) -> Path:
    """The path of the installed `soko` command, (re)installing it first if the sources changed."""
    soko = VENV / "bin" / "soko"
    stamp = VENV / ".installed"
    if soko.exists() and stamp.exists() and stamp.stat().st_mtime >= _newest_source():
        return soko
    out = subprocess.DEVNULL if quiet else None
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", str(REPO)], check=True, cwd=REPO,
                       stdout=out)
    else:
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall",
                        str(REPO)], check=True, cwd=REPO, stdout=out)
    for leftover in ("build", "soko.egg-info"):  # setuptools' by-products in the source tree
        shutil.rmtree(REPO / leftover, ignore_errors=True)
    stamp.touch()
    return soko
