"""A real registry with accounts (an htpasswd file made by `htpasswd -B`, a robot
and access rules), a few images worth looking at, and a headless Chromium."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.tools import need_tool
from tests.registry.conftest import Client, RegistryProc
from tests.registry.teams import basic, bcrypt_hash

from . import browser as chromium
from .images import HOSTILE, Pushed, push_image, push_index, push_referrer

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ROBOT, ROBOT_SECRET = "robot$ci", "robot-secret-1234"
# alice may do everything; bob may pull team/ and public/ and delete in bob/; the robot
# pushes ci/; anyone may pull public/*.
RULES = [
    {"account": "alice", "repository": "**", "actions": ["*"]},
    {"account": "bob", "repository": "team/**", "actions": ["pull"]},
    {"account": "bob", "repository": "bob/**", "actions": ["*"]},
    {"account": ROBOT, "repository": "ci/**", "actions": ["pull", "push"]},
    {"account": "anonymous", "repository": "public/*", "actions": ["pull"]},
]


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """What `htpasswd -B` writes (cost 4: the tests check logic, not bcrypt's slowness)."""
    need_tool("htpasswd")
    lines = [subprocess.run(["htpasswd", "-nbB", "-C", "4", u, p], check=True, capture_output=True,
                            text=True).stdout.strip() for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class UIRegistry:
    proc: RegistryProc
    images: dict[str, Pushed]

    @property
    def url(self) -> str:
        return self.proc.url

    def client(self, user: str | None = "alice") -> Client:
        auth = None if user is None else basic(user, USERS.get(user) or ROBOT_SECRET)
        return self.proc.client(auth=auth)

    def tags(self, repo: str, user: str = "alice") -> list[str]:
        c = self.client(user)
        try:
            r = c.request("GET", f"/v2/{repo}/tags/list")
            assert r.status == 200, (r.status, r.body)
            return r.json()["tags"] or []
        finally:
            c.close()


def start_registry(tmp: Path, extra: dict | None = None, args: tuple[str, ...] = ()) -> RegistryProc:
    pw = htpasswd_file(tmp / "htpasswd", USERS)
    cfg = {"htpasswd": str(pw), "robots": {ROBOT: {"secret": bcrypt_hash(ROBOT_SECRET), "namespaces": ["ci"]}},
           "access": RULES, **(extra or {})}
    proc = RegistryProc(tmp / "root", args=list(args)).configure(cfg)
    return proc.start()


def populate(c: Client) -> dict[str, Pushed]:
    images = {
        "app:v1": push_image(c, "team/app", "v1", seed="v1"),
        "app:v2": push_image(c, "team/app", "v2", seed="v2", annotations={"org.opencontainers.image.title": HOSTILE}),
        "app:old": push_image(c, "team/app", "old", seed="old"),
        "web:multi": push_index(c, "team/web", "multi"),
        "hello:latest": push_image(c, "public/hello", "latest", layers=1),
        "evil:latest": push_image(c, "public/evil", "latest", labels={"note": HOSTILE, HOSTILE: "key too"}),
        "ci:build": push_image(c, "ci/build", "build-1"),
        "bob:tool": push_image(c, "bob/tool", "1.0"),
        "secret:x": push_image(c, "secret/stuff", "x"),
    }
    app = images["app:v1"]
    push_referrer(c, "team/app", app, "application/spdx+json", {"org.opencontainers.image.created": "2026-01-02"})
    push_referrer(c, "team/app", app, "application/vnd.dev.cosign.artifact.sig.v1+json",
                  {"dev.sigstore.cosign/signature": "MEUCIQ..."})
    return images


@pytest.fixture(scope="module")
def ui_registry(tmp_path_factory) -> UIRegistry:
    tmp = tmp_path_factory.mktemp("ui-registry")
    proc = start_registry(tmp)
    c = proc.client(auth=basic("alice", USERS["alice"]))
    try:
        images = populate(c)
    finally:
        c.close()
    yield UIRegistry(proc, images)
    proc.stop()
    assert "Traceback" not in proc.errors(), proc.errors()


@pytest.fixture
def browser(tmp_path, ui_registry):
    """A fresh Chromium on the module's registry; a last screenshot lands in the test's temp dir."""
    yield from open_browser(tmp_path, ui_registry.url)


def open_browser(tmp_path: Path, base: str, size=chromium.DESKTOP):
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    driver = chromium.start(tmp_path / "chromium-profile", size)
    b = chromium.Browser(driver, base, shots)
    try:
        yield b
    finally:
        try:
            b.shot("final")
        finally:
            driver.quit()
