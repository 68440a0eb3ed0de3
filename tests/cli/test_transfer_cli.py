"""push, pull, copy, login and logout through the real `soko` command,
against Debian's docker-registry with htpasswd auth."""
from __future__ import annotations

import json

import pytest

from tests.client.client_helpers import start_distribution
from tests.conftest import SokoCLI
from tests.interop.tools import need_tool, run


@pytest.fixture
def authed_registry(tmp_path):
    need_tool("docker-registry")
    reg = start_distribution(tmp_path / "reg", ("alice", "s3cret"))
    yield reg
    reg.stop()


def test_login_push_pull_copy_logout(soko, busybox_rootfs, authed_registry, tmp_path):
    host = authed_registry.host
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    soko.env.update(env)
    soko("import", busybox_rootfs, "bb:1")
    r = soko("push", "bb:1", f"{host}/team/bb:1", check=False)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "authentication required" in r.stderr and f"soko login {host}" in r.stderr
    r = soko("login", "-u", "alice", "--password-stdin", host, input="wrong\n", check=False)
    assert r.returncode == 1
    assert soko("login", "-u", "alice", "--password-stdin", host, input="s3cret\n").stdout.strip() == \
        "Login Succeeded"
    assert host in json.loads((tmp_path / "docker" / "config.json").read_text())["auths"]
    out = soko("push", "bb:1", f"{host}/team/bb:1").stdout
    assert ": Pushed" in out
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    info = json.loads(run("skopeo", "inspect", "--tls-verify=false", "--creds", "alice:s3cret",
                          f"docker://{host}/team/bb:1"))
    assert info["Digest"] == digest
    again = soko("push", "bb:1", f"{host}/team/bb:1").stdout
    assert "Layer already exists" in again
    fresh = SokoCLI(tmp_path / "fresh")
    fresh.env.update(env)
    out = fresh("pull", f"{host}/team/bb:1").stdout
    assert f"Digest: {digest}" in out
    assert json.loads(fresh("inspect", f"{host}/team/bb:1").stdout)[0]["RootFS"] == \
        json.loads(soko("inspect", "bb:1").stdout)[0]["RootFS"]
    out = soko("copy", f"docker://{host}/team/bb:1", f"docker://{host}/other/bb:2").stdout
    assert digest in out
    assert soko("logout", host).stdout.strip() == f"Removing login credentials for {host}"
    r = fresh("pull", f"{host}/other/bb:2", check=False, env={"DOCKER_CONFIG": str(tmp_path / "docker")})
    assert r.returncode == 1
