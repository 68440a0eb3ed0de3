"""Running the real third-party tools the interop tests compare against."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (make setup installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def run(*args, input: bytes | None = None, env: dict | None = None, timeout: float = 300) -> str:
    p = subprocess.run([str(a) for a in args], capture_output=True, input=input, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {p.returncode}:\n"
                             f"{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


class Podman:
    """podman as TESTING.md says it works here: runc, no default ulimits, and
    a private storage root so tests never touch the machine's images."""

    def __init__(self, tmp: Path):
        need_tool("podman")
        need_tool("runc")
        conf = tmp / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = {"CONTAINERS_CONF": str(conf)}
        self.runroot = tempfile.mkdtemp(prefix="pm-", dir="/run")  # podman wants a short runroot
        self.base = ["podman", "--root", str(tmp / "podman-root"), "--runroot", self.runroot,
                     "--runtime", "runc", "--storage-driver", "vfs"]

    def __call__(self, *args, **kw) -> str:
        return run(*self.base, *args, env=self.env, **kw)

    def cleanup(self) -> None:
        subprocess.run([*self.base, "system", "reset", "--force"], capture_output=True, env={**os.environ, **self.env})
        shutil.rmtree(self.runroot, ignore_errors=True)
