"""Fixtures for registry client tests: real registries on loopback, private stores and config."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.client.client_helpers import (Registry, have_soko_server, start_distribution,  # noqa: E402
                            start_soko_server)

from storage.images import ImageStore  # noqa: E402

REGISTRY_KINDS = ["distribution"] + (["soko"] if have_soko_server() else [])
_names = itertools.count()


@pytest.fixture(autouse=True)
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty $DOCKER_CONFIG (never the real ~/.docker)."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


def _start(kind: str, root: Path, htpasswd: tuple[str, str] | None = None) -> Registry:
    if kind == "distribution":
        return start_distribution(root, htpasswd)
    return start_soko_server(root, htpasswd)


@pytest.fixture(scope="session", params=REGISTRY_KINDS)
def registry(request, tmp_path_factory) -> Registry:
    """An anonymous registry (each kind in turn), shared by the session: tests use fresh repositories."""
    reg = _start(request.param, tmp_path_factory.mktemp(f"reg-{request.param}"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session", params=REGISTRY_KINDS)
def auth_registry(request, tmp_path_factory) -> Registry:
    """A registry asking for Basic auth (htpasswd user `tester`, password `s3cret`)."""
    reg = _start(request.param, tmp_path_factory.mktemp(f"authreg-{request.param}"), ("tester", "s3cret"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def distribution(tmp_path_factory) -> Registry:
    reg = start_distribution(tmp_path_factory.mktemp("reg-dist"))
    yield reg
    reg.stop()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def store2(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store2")


@pytest.fixture
def repo_name(request) -> str:
    """A repository path no other test uses."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t{next(_names)}/{base}"
