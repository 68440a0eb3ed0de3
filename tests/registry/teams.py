"""A registry for teams in tests: accounts with passwords, access rules, and a
small client of the token endpoint (Basic or OAuth2 form), as Docker speaks it."""
from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass, field
from functools import lru_cache

import bcrypt

from .conftest import Client, RegistryProc

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
ROBOT = "robot$ci"
ROBOT_SECRET = "robot-secret-1234"


@lru_cache(maxsize=None)
def bcrypt_hash(secret: str) -> str:
    """Cost 4: the tests check logic, not bcrypt's slowness."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def team_config(**extra) -> dict:
    """alice (group devs) may do everything under team/; bob may pull team/ and push bob/;
    carol has an account and no rule; robot$ci may push and pull ci/ only (though the
    rule says team/** too); anonymous may pull public/*."""
    cfg = {
        "users": {u: bcrypt_hash(p) for u, p in PASSWORDS.items()},
        "groups": {"devs": ["alice"]},
        "robots": {ROBOT: {"secret": bcrypt_hash(ROBOT_SECRET), "namespaces": ["ci"]}},
        "access": [
            {"account": "group:devs", "repository": "team/**", "actions": ["*"]},
            {"account": "bob", "repository": "team/**", "actions": ["pull"]},
            {"account": "bob", "repository": "bob/*", "actions": ["pull", "push", "delete"]},
            {"account": ROBOT, "repository": "ci/**", "actions": ["pull", "push"]},
            {"account": ROBOT, "repository": "team/**", "actions": ["pull", "push"]},
            {"account": "anonymous", "repository": "public/*", "actions": ["pull"]},
            {"account": "group:devs", "repository": "public/*", "actions": ["pull", "push"]},
        ],
    }
    cfg.update(extra)
    return cfg


@dataclass
class Tokens:
    """Talks to a soko server's /token endpoint."""
    srv: RegistryProc
    issued: list[dict] = field(default_factory=list)

    def get(self, user: str | None = None, password: str | None = None, scopes: list[str] = (),
            offline: bool = False, service: str | None = None, account: str | None = None) -> tuple[int, dict]:
        q: list[tuple[str, str]] = [("service", service or self.service)] + [("scope", s) for s in scopes]
        if offline:
            q += [("offline_token", "true"), ("client_id", "tests")]
        if account:
            q.append(("account", account))
        headers = {"Authorization": basic(user, password or "")} if user else {}
        r = self.srv.client().request("GET", "/token?" + urllib.parse.urlencode(q), headers=headers)
        return r.status, (json.loads(r.body) if r.body else {})

    def post(self, form: dict[str, str]) -> tuple[int, dict]:
        body = urllib.parse.urlencode({"service": self.service, "client_id": "tests", **form}).encode()
        r = self.srv.client().request("POST", "/token", body=body,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        return r.status, json.loads(r.body)

    def token(self, user: str | None, scopes: list[str]) -> str:
        status, body = self.get(user, PASSWORDS.get(user or "", ROBOT_SECRET) if user else None, scopes)
        assert status == 200, body
        return body["token"]

    def client(self, user: str | None, scopes: list[str]) -> Client:
        return self.srv.client(auth="Bearer " + self.token(user, scopes))

    @property
    def service(self) -> str:
        return f"127.0.0.1:{self.srv.port}"


def claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def challenge(header: str | None) -> dict[str, str]:
    """The parameters of a Bearer challenge."""
    assert header and header.startswith("Bearer "), header
    out = {}
    for part in urllib.parse.unquote(header[7:]).split('",'):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().strip('"')
    return out
