"""Token auth and access rules of `soko serve` with real clients: Docker Engine
(login, push, pull, search), podman, skopeo, the soko command, and CNCF
distribution 2.8 trusting soko's tokens."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from registry.server.jws import sign

from tests.client.client_helpers import start_distribution
from tests.conftest import need_root
from tests.interop.tools import Containers, need_tool, run

from .layouts import busybox_layout
from .teams import PASSWORDS, ROBOT, ROBOT_SECRET, basic, team_config

pytestmark = pytest.mark.interop


@pytest.fixture
def team(fresh_server):
    srv = fresh_server.configure(team_config(token={})).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout") / "busybox"
    return d, busybox_layout(d)


def _tags(srv, name: str) -> list[str]:
    r = srv.client(auth=basic("alice", PASSWORDS["alice"])).request("GET", f"/v2/{name}/tags/list")
    return r.json().get("tags", []) if r.status == 200 else []


def test_docker_login_push_pull_search(team, docker_engine):
    need_root()
    srv, docker = team, docker_engine
    host = f"127.0.0.1:{srv.port}"
    r = docker("login", "-u", "alice", "--password-stdin", host, input=b"wrong\n", check=False)
    assert r.returncode != 0 and b"unauthorized" in r.stderr.lower(), r.stderr
    out = docker.out("login", "-u", "alice", "--password-stdin", host, input=PASSWORDS["alice"].encode() + b"\n")
    assert "Login Succeeded" in out
    stored = json.loads((docker.base / "client-config" / "config.json").read_text())["auths"][host]
    assert stored.get("identitytoken"), stored  # the refresh token the token endpoint handed out
    docker("tag", "busybox:local", f"{host}/team/app:1")
    docker("push", f"{host}/team/app:1")
    assert _tags(srv, "team/app") == ["1"]
    docker("rmi", f"{host}/team/app:1")
    docker("pull", f"{host}/team/app:1")
    assert docker.out("run", "--rm", "--network", "none", f"{host}/team/app:1", "echo", "pulled").strip() == "pulled"
    found = docker.out("search", "--format", "{{.Name}}", f"{host}/app").split()
    assert found == ["team/app"]

    # bob may pull team/ and not push there: Docker says denied, the registry keeps what it had
    docker("logout", host)
    docker("login", "-u", "bob", "--password-stdin", host, input=PASSWORDS["bob"].encode() + b"\n")
    docker("tag", "busybox:local", f"{host}/team/app:2")
    r = docker("push", f"{host}/team/app:2", check=False)
    assert r.returncode != 0 and b"denied" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    assert _tags(srv, "team/app") == ["1"]
    docker("pull", f"{host}/team/app:1")
    # anonymous: public pulls only
    docker("logout", host)
    docker("tag", "busybox:local", f"{host}/public/base:1")
    r = docker("push", f"{host}/public/base:1", check=False)
    assert r.returncode != 0
    docker("rmi", f"{host}/team/app:1")
    r = docker("pull", f"{host}/team/app:1", check=False)
    assert r.returncode != 0 and b"unauthorized: authentication required to pull team/app" in r.stderr, r.stderr
    assert docker.out("search", "--format", "{{.Name}}", f"{host}/app").split() == []
    for tag in ("team/app:1", "team/app:2", "public/base:1"):
        docker("rmi", f"{host}/{tag}", check=False)


def test_podman_with_token_auth(team, layout, tmp_path):
    src, _ = layout
    srv = team
    host = f"127.0.0.1:{srv.port}"
    authfile = str(tmp_path / "auth.json")
    podman = Containers("podman", tmp_path)
    try:
        podman("pull", f"oci:{src}:latest")
        image = podman("images", "-q").split()[0]
        podman("login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", PASSWORDS["alice"], host)
        podman("push", "--tls-verify=false", "--authfile", authfile, image, f"docker://{host}/team/pod:1")
        assert _tags(srv, "team/pod") == ["1"]
        podman("rmi", "-a", "-f")
        podman("login", "--tls-verify=false", "--authfile", authfile, "-u", "bob", "-p", PASSWORDS["bob"], host)
        podman("pull", "--tls-verify=false", "--authfile", authfile, f"{host}/team/pod:1")
        with pytest.raises(AssertionError, match="(?i)denied|unauthorized|forbidden"):
            podman("push", "--tls-verify=false", "--authfile", authfile, f"{host}/team/pod:1",
                   f"docker://{host}/team/pod:2")
        assert _tags(srv, "team/pod") == ["1"]
    finally:
        podman.cleanup()


def test_skopeo_with_token_auth(team, layout, tmp_path):
    need_tool("skopeo")
    src, digest = layout
    host = f"127.0.0.1:{team.port}"
    sk = ["skopeo", "--insecure-policy"]
    run(*sk, "copy", "--dest-tls-verify=false", "--dest-creds", f"{ROBOT}:{ROBOT_SECRET}", f"oci:{src}:latest",
        f"docker://{host}/ci/sk:1")
    info = json.loads(run(*sk, "inspect", "--tls-verify=false", "--creds", f"{ROBOT}:{ROBOT_SECRET}",
                          f"docker://{host}/ci/sk:1"))
    assert info["Digest"] == digest
    with pytest.raises(AssertionError, match="(?i)denied|unauthorized|forbidden"):  # alice has no rule for ci/
        run(*sk, "inspect", "--tls-verify=false", "--creds", f"alice:{PASSWORDS['alice']}",
            f"docker://{host}/ci/sk:1")
    with pytest.raises(AssertionError, match="(?i)denied|unauthorized|forbidden"):  # the robot stays in ci/
        run(*sk, "copy", "--dest-tls-verify=false", "--dest-creds", f"{ROBOT}:{ROBOT_SECRET}", f"oci:{src}:latest",
            f"docker://{host}/team/sk:1")
    assert _tags(team, "team/sk") == []


def test_soko_login_push_pull_search(team, soko, busybox_rootfs, tmp_path):
    host = f"127.0.0.1:{team.port}"
    soko.env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    soko("import", busybox_rootfs, "bb:1")
    assert soko("login", "-u", "alice", "--password-stdin", host, input="wrong\n", check=False).returncode == 1
    assert soko("login", "-u", "alice", "--password-stdin", host,
                input=PASSWORDS["alice"] + "\n").stdout.strip() == "Login Succeeded"
    entry = json.loads((tmp_path / "docker" / "config.json").read_text())["auths"][host]
    assert entry["identitytoken"] and PASSWORDS["alice"] not in json.dumps(entry)
    soko("push", "bb:1", f"{host}/team/bb:1")
    assert _tags(team, "team/bb") == ["1"]
    other = type(soko)(tmp_path / "store2")
    other.env["DOCKER_CONFIG"] = soko.env["DOCKER_CONFIG"]
    other("pull", f"{host}/team/bb:1")
    found = json.loads(soko("search", "--format", "json", f"{host}/bb").stdout)
    assert [r["name"] for r in found] == ["team/bb"]
    assert soko("search", f"{host}/bb").stdout.splitlines()[0].split() == \
        ["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"]
    soko("logout", host)
    soko("login", "-u", "bob", "--password-stdin", host, input=PASSWORDS["bob"] + "\n")
    r = soko("push", "bb:1", f"{host}/team/bb:2", check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "denied" in r.stderr, r.stderr
    assert _tags(team, "team/bb") == ["1"]
    soko("logout", host)
    assert json.loads(soko("search", "--format", "json", f"{host}/bb").stdout) == []  # anonymous sees no team/
    r = soko("search", "bb", check=False)
    assert r.returncode == 1 and "HOST/TERM" in r.stderr


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_distribution_accepts_soko_tokens(fresh_server, layout, tmp_path, key_type):
    """distribution 2.8 with auth.token: realm, service, issuer and rootcertbundle pointing at soko."""
    need_tool("docker-registry")
    from registry.server.keys import make_signer

    src, digest = layout
    key, cert = make_signer(tmp_path / "signer", ec_key=key_type == "ec")
    srv = fresh_server.configure(team_config(token={"key": str(key), "cert": str(cert), "service": "shared-registry",
                                                    "issuer": "soko-test"})).start()
    realm = f"http://127.0.0.1:{srv.port}/token"
    dist = start_distribution(tmp_path / "dist", token={"realm": realm, "service": "shared-registry",
                                                        "issuer": "soko-test", "rootcertbundle": str(cert)})
    try:
        host = dist.host
        sk = ["skopeo", "--insecure-policy"]
        run(*sk, "copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{PASSWORDS['alice']}",
            f"oci:{src}:latest", f"docker://{host}/team/app:1")
        info = json.loads(run(*sk, "inspect", "--tls-verify=false", "--creds", f"bob:{PASSWORDS['bob']}",
                              f"docker://{host}/team/app:1"))
        assert info["Digest"] == digest
        out = tmp_path / "out"
        run(*sk, "copy", "--src-tls-verify=false", "--src-creds", f"bob:{PASSWORDS['bob']}",
            f"docker://{host}/team/app:1", f"dir:{out}")
        assert (out / "manifest.json").is_file()
        with pytest.raises(AssertionError, match="(?i)denied|unauthorized|forbidden"):  # bob's token holds pull only
            run(*sk, "copy", "--dest-tls-verify=false", "--dest-creds", f"bob:{PASSWORDS['bob']}",
                f"oci:{src}:latest", f"docker://{host}/team/app:2")
        with pytest.raises(AssertionError, match="(?i)denied|unauthorized|forbidden"):  # anonymous: nothing under team/
            run(*sk, "inspect", "--tls-verify=false", "--no-creds", f"docker://{host}/team/app:1")
        tags = json.loads(run(*sk, "list-tags", "--tls-verify=false", "--creds", f"alice:{PASSWORDS['alice']}",
                              f"docker://{host}/team/app"))["Tags"]
        assert tags == ["1"]
        # and the tokens soko hands out are the ones distribution checked: a forged one is refused
        forged = sign({"iss": "soko-test", "sub": "alice", "aud": "shared-registry", "exp": int(time.time()) + 300,
                       "nbf": int(time.time()), "access": [{"type": "repository", "name": "team/app",
                                                            "actions": ["pull"]}]},
                      ec.generate_private_key(ec.SECP256R1()))
        req = urllib.request.Request(f"http://{host}/v2/team/app/tags/list",
                                     headers={"Authorization": f"Bearer {forged}"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=10)
        assert ei.value.code == 401
    finally:
        dist.stop()
