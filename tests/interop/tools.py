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


class Containers:
    """podman or buildah as TESTING.md says they work here: runc, no default
    ulimits (a private containers.conf through CONTAINERS_CONF), a private
    storage root and a short run root under /run, so tests never touch the
    machine's images or its /etc."""

    def __init__(self, tool: str, tmp: Path, driver: str = "vfs", env: dict | None = None):
        need_tool(tool)
        need_tool("runc")
        conf = tmp / f"{tool}-containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.tool, self.driver = tool, driver
        self.env = {"CONTAINERS_CONF": str(conf), **(env or {})}
        self.root = tmp / f"{tool}-root"
        self.runroot = tempfile.mkdtemp(prefix=f"{tool[:2]}-", dir="/run")  # podman wants a short runroot
        self.base = [tool, "--root", str(self.root), "--runroot", self.runroot, "--storage-driver", driver]
        if tool == "podman":
            self.base += ["--runtime", "runc"]

    def __call__(self, *args, **kw) -> str:
        return run(*self.base, *args, env=self.env, **kw)

    def storage(self, name: str) -> str:
        """A skopeo/containers-image reference to `name` in this private storage."""
        return f"containers-storage:[{self.driver}@{self.root}+{self.runroot}]{name}"

    def cleanup(self) -> None:
        reset = ["system", "reset", "--force"] if self.tool == "podman" else ["rmi", "--all", "--force"]
        subprocess.run([*self.base, *reset], capture_output=True, env={**os.environ, **self.env})
        shutil.rmtree(self.runroot, ignore_errors=True)
