"""Credentials (config.json, credential helpers), login/logout, 401 messages, against a Basic-auth registry."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from registry.client import ClientOptions, login, logout, pull, push
from registry.client.credentials import CredentialStore
from registry.client.errors import AuthenticationRequired
from tests.client.client_helpers import busybox_layer, make_image

FAST = ClientOptions(backoff=0.05)


def _config(docker_config: Path, obj: dict) -> None:
    (docker_config / "config.json").write_text(json.dumps(obj))


def _b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


HELPER = """#!/bin/sh
# docker-credential-test: the credential helper protocol, with a log of what was asked
log="{log}"
case "$1" in
  get)
    read -r url
    echo "get $url" >> "$log"
    if [ "$url" = "{host}" ]; then
      printf '{{"ServerURL":"%s","Username":"tester","Secret":"s3cret"}}' "$url"
    else
      echo "credentials not found in native keychain"
      exit 1
    fi ;;
  store)
    cat > "{stored}"
    echo "store" >> "$log" ;;
  erase)
    read -r url
    echo "erase $url" >> "$log" ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_registry):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log, stored = tmp_path / "helper.log", tmp_path / "stored.json"
    script = bindir / "docker-credential-test"
    script.write_text(HELPER.format(log=log, host=auth_registry.host, stored=stored))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log, stored


def test_401_without_credentials_is_one_line(auth_registry, store, repo_name):
    ref = f"{auth_registry.host}/{repo_name}:1"
    make_image(store, ref, [busybox_layer(store)])
    with pytest.raises(AuthenticationRequired) as ei:
        push(store, ref, None, FAST)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "401" in msg and f"soko login {auth_registry.host}" in msg
    with pytest.raises(AuthenticationRequired) as ei:
        pull(store, ref, None, FAST)
    assert "\n" not in str(ei.value)


def test_config_json_auths(auth_registry, store, store2, repo_name, docker_config):
    ref = f"{auth_registry.host}/{repo_name}:1"
    m = make_image(store, ref, [busybox_layer(store)])
    _config(docker_config, {"auths": {auth_registry.host: {"auth": _b64("tester", "s3cret")}}})
    push(store, ref, None, FAST)
    assert pull(store2, ref, None, FAST).digest == m.digest


def test_config_json_with_url_key_and_wrong_password(auth_registry, store, repo_name, docker_config):
    ref = f"{auth_registry.host}/{repo_name}:1"
    make_image(store, ref, [busybox_layer(store)])
    _config(docker_config, {"auths": {f"https://{auth_registry.host}/v1/": {"auth": _b64("tester", "wrong")}}})
    with pytest.raises(AuthenticationRequired) as ei:
        push(store, ref, None, FAST)
    assert "refused the credentials" in str(ei.value) and "\n" not in str(ei.value)


def test_cred_helper_for_the_registry(auth_registry, store, store2, repo_name, docker_config, helper):
    log, _ = helper
    ref = f"{auth_registry.host}/{repo_name}:h"
    m = make_image(store, ref, [busybox_layer(store)])
    _config(docker_config, {"credHelpers": {auth_registry.host: "test"},
                            "auths": {auth_registry.host: {"auth": _b64("tester", "wrong")}}})
    push(store, ref, None, FAST)  # the helper wins over auths, as in Docker
    assert pull(store2, ref, None, FAST).digest == m.digest
    assert log.read_text().splitlines()[0] == f"get {auth_registry.host}"


def test_creds_store_falls_back_to_auths_when_helper_has_nothing(auth_registry, store, repo_name,
                                                                  docker_config, helper):
    log, _ = helper
    creds = CredentialStore(docker_config)
    _config(docker_config, {"credsStore": "test", "auths": {"other.example:5000": {"auth": _b64("a", "b")}}})
    assert creds.get(auth_registry.host).username == "tester"
    got = creds.get("other.example:5000")  # the helper has none: the auths entry answers
    assert (got.username, got.password) == ("a", "b")
    assert "get other.example:5000" in log.read_text()


def test_login_checks_then_stores_base64(auth_registry, store, repo_name, docker_config):
    with pytest.raises(AuthenticationRequired) as ei:
        login(auth_registry.host, "tester", "wrong", FAST)
    assert "incorrect username or password" in str(ei.value)
    assert not (docker_config / "config.json").exists()  # nothing stored on failure
    login(auth_registry.host, "tester", "s3cret", FAST)
    cfg = json.loads((docker_config / "config.json").read_text())
    assert cfg["auths"][auth_registry.host]["auth"] == _b64("tester", "s3cret")
    assert (docker_config / "config.json").stat().st_mode & 0o077 == 0
    ref = f"{auth_registry.host}/{repo_name}:l"
    make_image(store, ref, [busybox_layer(store)])
    push(store, ref, None, FAST)
    assert logout(auth_registry.host) is True
    assert auth_registry.host not in json.loads((docker_config / "config.json").read_text())["auths"]
    assert logout(auth_registry.host) is False
    with pytest.raises(AuthenticationRequired):
        push(store, ref, None, FAST)


def test_login_and_logout_through_creds_store(auth_registry, docker_config, helper):
    log, stored = helper
    _config(docker_config, {"credsStore": "test"})
    login(auth_registry.host, "tester", "s3cret", FAST)
    assert json.loads(stored.read_text()) == {"ServerURL": auth_registry.host, "Username": "tester",
                                              "Secret": "s3cret"}
    cfg = json.loads((docker_config / "config.json").read_text())
    assert cfg["auths"][auth_registry.host] == {}  # no secret in the file
    assert logout(auth_registry.host) is True
    assert f"erase {auth_registry.host}" in log.read_text()


def test_docker_hub_key(docker_config):
    creds = CredentialStore(docker_config)
    _config(docker_config, {"auths": {"https://index.docker.io/v1/": {"auth": _b64("hubuser", "pw"),
                                                                       "identitytoken": "tok"}}})
    got = creds.get("docker.io")
    assert (got.username, got.password, got.identity_token) == ("hubuser", "pw", "tok")
