"""Shared test fixtures: a private store per test and a way to run the real `soko` command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IS_ROOT = os.geteuid() == 0
IN_CI = bool(os.environ.get("CI"))


def need_root() -> None:
    """Skip outside root (CI always runs as root, so nothing is skipped there)."""
    if not IS_ROOT:
        if IN_CI:
            pytest.fail("CI must run as root")
        pytest.skip("needs root (namespaces, overlayfs, real tools)")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class SokoCLI:
    """Runs `python -m soko --root ROOT ...` as a user would, from this checkout."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}

    def argv(self) -> list[str]:
        """The command line that runs soko on this store (for tests that need a Popen)."""
        return [sys.executable, "-m", "soko", "--root", str(self.root)]

    def __call__(self, *args: str, input: bytes | str | None = None, check: bool = True,
                 timeout: float = 600, env: dict | None = None) -> Result:
        cmd = [*self.argv(), *map(str, args)]
        p = subprocess.run(cmd, input=input.encode() if isinstance(input, str) else input,
                           capture_output=True, timeout=timeout, env={**self.env, **(env or {})})
        r = Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        if check and p.returncode != 0:
            raise AssertionError(f"soko {' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def soko(store_root: Path) -> SokoCLI:
    return SokoCLI(store_root)


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory):
    """One real S3 server (radosgw on memstore) for the whole session, started on first use."""
    from tests.s3server import RadosGW

    gw = RadosGW(tmp_path_factory.mktemp("radosgw")).start()
    yield gw
    gw.stop()


@pytest.fixture
def s3_url(radosgw, monkeypatch) -> str:
    """A fresh bucket's `--storage` URL, with its credentials in the AWS variables."""
    for k, v in radosgw.env().items():
        monkeypatch.setenv(k, v)
    return radosgw.bucket()


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    """The byte-identical busybox root filesystem tarball from fixtures/."""
    sys.path.insert(0, str(REPO / "fixtures"))
    import recipes  # fixtures/recipes.py

    return recipes.busybox_rootfs()


@pytest.fixture(scope="session")
def bookworm_rootfs() -> Path:
    """Debian bookworm minbase (debootstrap, cached between runs)."""
    need_root()
    sys.path.insert(0, str(REPO / "fixtures"))
    import recipes

    return recipes.bookworm_rootfs()


@pytest.fixture(autouse=True)
def _mutation_sandbox_cwd(request, tmp_path_factory):
    """Under `make mutate`, every test runs with its own empty working directory.

    A mutant that drops a `dir_fd=` turns a removal relative to a layer into one
    relative to the working directory: without this it deletes the scratch tree
    that mutmut itself is reading. mutmut's config (pyproject.toml) comes along,
    because mutated code in child processes reads it from the working directory.
    """
    if not os.environ.get("SOKO_MUTATION"):
        yield
        return
    old = os.getcwd()
    cwd = tmp_path_factory.mktemp("cwd")
    if os.path.exists("pyproject.toml"):
        shutil.copy("pyproject.toml", cwd)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old)


if os.environ.get("SOKO_MUTMUT_HITS"):
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        """`make mutate`: the functions this test's child processes called count as its own
        (tests/mutation/mutate.py has the child side)."""
        yield
        if os.environ.get("MUTANT_UNDER_TEST") != "stats":
            return
        import json

        from mutmut.state import state

        for f in Path(os.environ["SOKO_MUTMUT_HITS"]).glob("*.json"):
            state()._stats.update(json.loads(f.read_text()))
            f.unlink()


# A private Docker Engine, the reference for build results, CLI output and interop.
from tests.interop.docker import docker_engine  # noqa: E402,F401
