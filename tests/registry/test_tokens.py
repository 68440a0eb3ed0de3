"""Docker token auth in `soko serve`: challenges, the /token endpoint (Basic
GET and OAuth2 POST), what tokens grant, and the tokens the registry refuses."""
from __future__ import annotations

import subprocess
import time

import pytest

from registry.server.jws import key_id, sign
from registry.server.keys import load_private_key

from .conftest import DOCKER_MANIFEST, sha256, unique
from .teams import PASSWORDS, ROBOT, ROBOT_SECRET, Tokens, basic, bcrypt_hash, challenge, claims, team_config


@pytest.fixture
def team(fresh_server):
    srv = fresh_server.configure(team_config(token={})).start()
    yield srv, Tokens(srv)
    srv.stop()
    assert "Traceback" not in srv.errors(), srv.errors()


def test_challenges_name_the_scope_each_request_needs(team):
    srv, tokens = team
    c = srv.client()
    r = c.request("GET", "/v2/")
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"]
    ch = challenge(r.header("WWW-Authenticate"))
    assert ch == {"realm": f"http://127.0.0.1:{srv.port}/token", "service": f"127.0.0.1:{srv.port}"}
    # the realm follows the name the client used, unless that name could break the header
    r = c.request("GET", "/v2/", headers={"Host": f"localhost:{srv.port}"})
    assert challenge(r.header("WWW-Authenticate"))["realm"] == f"http://localhost:{srv.port}/token"
    r = c.request("GET", "/v2/", headers={"Host": 'evil",error="x'})
    assert challenge(r.header("WWW-Authenticate"))["realm"] == f"http://127.0.0.1:{srv.port}/token"
    for method, path, scope in [
        ("GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
        ("HEAD", "/v2/team/app/blobs/" + sha256(b"x"), "repository:team/app:pull"),
        ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
        ("DELETE", "/v2/team/app/manifests/v1", "repository:team/app:delete"),
        ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
        ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
        ("GET", "/v2/_catalog", "registry:catalog:*"),
    ]:
        r = c.request(method, path, body=b"{}" if method == "PUT" else None)
        assert r.status == 401, (method, path, r.status)
        assert challenge(r.header("WWW-Authenticate"))["scope"] == scope, (method, path)
        if method != "HEAD":
            assert r.codes == ["UNAUTHORIZED"]


def test_tokens_grant_only_what_the_rules_allow(team):
    srv, tokens = team
    asked = ["repository:team/app:pull,push", "repository:public/base:pull,push", "repository:ci/job:pull,push"]

    def granted(user, password=None, scopes=asked):
        status, body = tokens.get(user, password, scopes)
        assert status == 200, body
        c = claims(body["token"])
        return {a["name"]: a["actions"] for a in c["access"]}

    assert granted("alice", PASSWORDS["alice"]) == {"team/app": ["pull", "push"], "public/base": ["pull", "push"]}
    assert granted("bob", PASSWORDS["bob"]) == {"team/app": ["pull"], "public/base": ["pull"]}  # push asked, pull got
    assert granted("carol", PASSWORDS["carol"]) == {"public/base": ["pull"]}  # what anonymous may, anyone may
    assert granted(None) == {"public/base": ["pull"]}
    # the robot's rule names team/** too, its namespaces keep it in ci/
    assert granted(ROBOT, ROBOT_SECRET) == {"ci/job": ["pull", "push"], "public/base": ["pull"]}
    assert granted("alice", PASSWORDS["alice"], ["repository:team/app:*"]) == {"team/app": ["*"]}
    assert granted("bob", PASSWORDS["bob"], ["repository:team/x:*"]) == {"team/x": ["pull"]}

    status, body = tokens.get("alice", PASSWORDS["alice"], ["repository:team/app:pull"])
    header_part = body["token"].split(".")[0]
    import base64
    import json
    header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
    c = claims(body["token"])
    key = load_private_key(srv.root / "token" / "token.key")
    assert header["alg"] == "ES256" and header["kid"] == key_id(key.public_key())
    assert len(header["kid"]) == 59 and header["kid"].count(":") == 11  # libtrust's fingerprint form
    assert c["iss"] == "soko" and c["aud"] == tokens.service and c["sub"] == "alice"
    assert c["exp"] - c["iat"] == 300 == body["expires_in"] and c["nbf"] <= time.time()


def test_the_token_endpoint_refuses_what_it_must(team):
    srv, tokens = team
    for user, password in [("alice", "wrong"), ("mallory", "x"), (ROBOT, "nope")]:
        status, body = tokens.get(user, password, ["repository:team/app:pull"])
        assert status == 401 and body["errors"][0]["code"] == "UNAUTHORIZED", (user, body)
    r = srv.client().request("GET", "/token", headers={"Authorization": basic("alice", "wrong")})
    assert r.header("WWW-Authenticate") == 'Basic realm="soko"'
    status, body = tokens.get("alice", PASSWORDS["alice"], account="bob")
    assert status == 400 and "does not match" in body["errors"][0]["message"]
    status, body = tokens.get("alice", PASSWORDS["alice"], service="elsewhere")
    assert status == 400 and "unknown service" in body["errors"][0]["message"]
    status, body = tokens.post({"grant_type": "client_credentials"})
    assert status == 400
    status, body = tokens.post({"grant_type": "password", "username": "alice", "password": "wrong"})
    assert status == 401
    # no refresh token for anonymous, nor unless asked
    assert "refresh_token" not in tokens.get(None, offline=True)[1]
    assert "refresh_token" not in tokens.get("alice", PASSWORDS["alice"])[1]


def test_oauth_password_and_refresh_grants(team):
    srv, tokens = team
    status, body = tokens.post({"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"],
                                "access_type": "offline", "scope": "repository:team/app:pull,push"})
    assert status == 200, body
    assert {a["name"]: a["actions"] for a in claims(body["access_token"])["access"]} == {"team/app": ["pull", "push"]}
    refresh = body["refresh_token"]
    status, body = tokens.post({"grant_type": "refresh_token", "refresh_token": refresh,
                                "scope": "repository:team/x:pull repository:bob/y:push"})
    assert status == 200, body
    c = claims(body["access_token"])
    assert c["sub"] == "alice" and c["access"] == [{"type": "repository", "name": "team/x", "actions": ["pull"]}]
    # a refresh token is not an access token, and a tampered one is no refresh token
    r = srv.client(auth="Bearer " + refresh).request("GET", "/v2/")
    assert r.status == 401 and 'error="invalid_token"' in r.header("WWW-Authenticate")
    head, payload, sig = refresh.split(".")
    status, _ = tokens.post({"grant_type": "refresh_token", "refresh_token": f"{head}.{payload}.{sig[:-4]}AAAA"})
    assert status == 401
    status, _ = tokens.post({"grant_type": "refresh_token", "refresh_token": body["access_token"]})
    assert status == 401


def test_a_refresh_token_ends_when_the_password_changes(fresh_server, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-bBc", "-C", "4", str(htpasswd), "dave", "first"], check=True, capture_output=True)
    srv = fresh_server.configure({"token": {}, "htpasswd": str(htpasswd)}).start()
    tokens = Tokens(srv)
    status, body = tokens.get("dave", "first", offline=True)
    refresh = body["refresh_token"]
    assert tokens.post({"grant_type": "refresh_token", "refresh_token": refresh})[0] == 200
    time.sleep(1.1)  # mtime granularity and the server's once-a-second look at the file
    subprocess.run(["htpasswd", "-bB", "-C", "4", str(htpasswd), "dave", "second"], check=True, capture_output=True)
    deadline = time.time() + 10
    while tokens.get("dave", "second")[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    status, body = tokens.post({"grant_type": "refresh_token", "refresh_token": refresh})
    assert status == 401 and "no longer valid" in body["errors"][0]["message"]


def test_pushes_and_pulls_with_tokens(team):
    srv, tokens = team
    name = unique("team/app")
    alice = tokens.client("alice", [f"repository:{name}:pull,push"])
    digest, raw = alice.push_image(name, "v1", media_type=DOCKER_MANIFEST)
    bob = tokens.client("bob", [f"repository:{name}:pull,push"])  # granted pull only
    assert bob.request("GET", f"/v2/{name}/manifests/v1").body == raw
    r = bob.request("PUT", f"/v2/{name}/manifests/v2", body=raw, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status == 403 and r.codes == ["DENIED"] and "bob may not push" in r.json()["errors"][0]["message"]
    r = bob.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 403
    assert alice.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["v1"]  # nothing changed
    # a token for one repository says nothing about another: a fitting token is the answer
    other = unique("team/other")
    r = bob.request("GET", f"/v2/{other}/manifests/v1")
    assert r.status == 401 and challenge(r.header("WWW-Authenticate"))["error"] == "insufficient_scope"
    assert challenge(r.header("WWW-Authenticate"))["scope"] == f"repository:{other}:pull"
    # anonymous: public pulls with an anonymous token, nothing else
    public = unique("public/base")
    tokens.client("alice", [f"repository:{public}:pull,push"]).push_image(public, "1")
    anon = tokens.client(None, [f"repository:{public}:pull"])
    assert anon.request("GET", f"/v2/{public}/manifests/1").status == 200
    r = anon.request("GET", f"/v2/{name}/manifests/v1")
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"]


def _signed(srv, **changes) -> str:
    """A token signed with the server's own key, with some claims changed."""
    key = load_private_key(srv.root / "token" / "token.key")
    now = int(time.time())
    c = {"iss": "soko", "sub": "alice", "aud": f"127.0.0.1:{srv.port}", "exp": now + 300, "nbf": now, "iat": now,
         "jti": "x", "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}]}
    c.update(changes)
    return sign({k: v for k, v in c.items() if v is not None}, key)


def test_refused_tokens(team):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    srv, tokens = team
    name = "team/app"
    alice = tokens.client("alice", [f"repository:{name}:pull,push"])
    alice.push_image(name, "v1")
    now = int(time.time())
    other_ec = ec.generate_private_key(ec.SECP256R1())
    good = _signed(srv)
    head, payload, _ = good.split(".")
    forged_c = {"iss": "soko", "sub": "alice", "aud": f"127.0.0.1:{srv.port}", "exp": now + 300, "nbf": now,
                "access": [{"type": "repository", "name": name, "actions": ["pull", "push", "delete"]}]}
    refused = {
        "another key": sign(forged_c, other_ec),
        "another key, our kid": sign(forged_c, other_ec, {"kid": key_id(
            load_private_key(srv.root / "token" / "token.key").public_key())}),
        "an RSA key": sign(forged_c, rsa.generate_private_key(65537, 2048)),
        "expired": _signed(srv, exp=now - 120, nbf=now - 600, iat=now - 600),
        "not yet valid": _signed(srv, nbf=now + 120),
        "no exp": _signed(srv, exp=None),
        "another audience": _signed(srv, aud="elsewhere:5000"),
        "another issuer": _signed(srv, iss="mallory"),
        "alg none": f"{head}.{payload}.",
        "signature of another token": f"{head}.{_signed(srv, sub='bob').split('.')[1]}.{good.split('.')[2]}",
        "garbage": "not-a-token",
    }
    for why, token in refused.items():
        r = srv.client(auth=f"Bearer {token}").request("GET", f"/v2/{name}/manifests/v1")
        assert r.status == 401 and r.codes == ["UNAUTHORIZED"], (why, r.status, r.body)
        assert 'error="invalid_token"' in r.header("WWW-Authenticate"), why
    # within distribution's 60 s of leeway a token still holds
    assert srv.client(auth="Bearer " + _signed(srv, exp=now - 30)).request(
        "GET", f"/v2/{name}/manifests/v1").status == 200
    assert srv.client(auth="Bearer " + good).request("GET", f"/v2/{name}/manifests/v1").status == 200
    # escalation: a pull token is no push token, whatever the caller may do
    pull_only = srv.client(auth="Bearer " + good)
    r = pull_only.request("DELETE", f"/v2/{name}/manifests/v1")
    assert r.status == 401 and challenge(r.header("WWW-Authenticate"))["error"] == "insufficient_scope"
    as_bob = srv.client(auth="Bearer " + _signed(srv, sub="bob"))
    assert as_bob.request("DELETE", f"/v2/{name}/manifests/v1").status == 403  # bob may not, whatever he holds
    assert alice.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["v1"]


def test_basic_beside_tokens_and_token_only(fresh_server, tmp_path):
    srv = fresh_server.configure(team_config(token={})).start()
    name = unique("team/basic")
    alice = srv.client(auth=basic("alice", PASSWORDS["alice"]))
    alice.push_image(name, "v1")
    bob = srv.client(auth=basic("bob", PASSWORDS["bob"]))
    assert bob.request("GET", f"/v2/{name}/manifests/v1").status == 200
    r = bob.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 403 and r.codes == ["DENIED"]
    assert srv.client(auth=basic("bob", "wrong")).request("GET", "/v2/").status == 401
    srv.stop()
    srv.args = []
    srv.configure(team_config(token={"basic": False})).start()
    r = srv.client(auth=basic("alice", PASSWORDS["alice"])).request("GET", f"/v2/{name}/manifests/v1")
    assert r.status == 401 and r.header("WWW-Authenticate").startswith("Bearer ")
    assert Tokens(srv).client("alice", [f"repository:{name}:pull"]).request(
        "GET", f"/v2/{name}/manifests/v1").status == 200


def test_robot_accounts(fresh_server):
    import datetime

    expired = {"secret": bcrypt_hash("old-secret"), "namespaces": ["ci"],
               "expires": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}
    cfg = team_config(token={})
    cfg["robots"]["robot$old"] = expired
    srv = fresh_server.configure(cfg).start()
    tokens = Tokens(srv)
    name = unique("ci/job")
    robot = tokens.client(ROBOT, [f"repository:{name}:pull,push"])
    robot.push_image(name, "1")
    team_repo = unique("team/app")
    r = srv.client(auth=basic(ROBOT, ROBOT_SECRET)).request("POST", f"/v2/{team_repo}/blobs/uploads/")
    assert r.status == 403  # outside its namespace, whatever the rules say
    status, body = tokens.get("robot$old", "old-secret", [f"repository:{name}:pull"])
    assert status == 401
    assert srv.client(auth=basic("robot$old", "old-secret")).request("GET", "/v2/").status == 401


def test_catalog_and_search_list_only_what_the_caller_may_pull(team):
    srv, tokens = team
    repos = {"team/alpha": "alice", "team/beta": "alice", "bob/gamma": "bob", "public/alpha": "alice",
             "ci/alpha": ROBOT}
    for repo, who in repos.items():
        tokens.client(who, [f"repository:{repo}:pull,push"]).push_image(repo, "1")

    def catalog(who, query=""):
        c = tokens.client(who, ["registry:catalog:*"])
        r = c.request("GET", "/v2/_catalog" + query)
        assert r.status == 200, r.body
        return r.json()["repositories"], r.header("Link")

    assert catalog("alice")[0] == ["public/alpha", "team/alpha", "team/beta"]
    assert catalog("bob")[0] == ["bob/gamma", "public/alpha", "team/alpha", "team/beta"]
    assert catalog(ROBOT)[0] == ["ci/alpha", "public/alpha"]
    assert catalog(None)[0] == ["public/alpha"]
    page, link = catalog("bob", "?n=2")
    assert page == ["bob/gamma", "public/alpha"] and "last=public%2Falpha" in link
    assert catalog("bob", "?n=2&last=public/alpha")[0] == ["team/alpha", "team/beta"]
    assert srv.client(auth=basic("carol", PASSWORDS["carol"])).request(
        "GET", "/v2/_catalog").json()["repositories"] == ["public/alpha"]

    def search(who, query):
        r = tokens.client(who, ["registry:catalog:search"]).request("GET", "/v1/search?" + query)
        assert r.status == 200, r.body
        return r.json()

    found = search("bob", "q=alpha")
    assert [x["name"] for x in found["results"]] == ["public/alpha", "team/alpha"]
    assert found["num_results"] == 2 and found["query"] == "alpha" and found["page"] == 1
    assert found["results"][0] == {"name": "public/alpha", "description": "", "star_count": 0,
                                   "is_official": False, "is_automated": False, "is_trusted": False}
    assert [x["name"] for x in search(None, "q=alpha")["results"]] == ["public/alpha"]
    # `docker search` sends nothing when it has no identity token: anonymous sees what anonymous may pull
    r = srv.client().request("GET", "/v1/search?q=alpha")
    assert r.status == 200 and [x["name"] for x in r.json()["results"]] == ["public/alpha"]
    paged = search("alice", "q=a&n=1&page=2")
    assert paged["num_pages"] == 3 and paged["page_size"] == 1 and [x["name"] for x in paged["results"]] == \
        ["team/alpha"]
    r = tokens.client("alice", []).request("GET", "/v1/search?q=a&n=1000")
    assert r.status == 400 and r.codes == ["PAGINATION_NUMBER_INVALID"]


def test_external_issuers(fresh_server, tmp_path):
    """--token-realm/--token-issuer/--token-service/--token-cert: tokens of another issuer,
    one naming its key by an x5c chain (the client tests' token server) and one by a
    libtrust kid (another soko)."""
    import base64
    import json
    import urllib.request

    from registry.server.keys import make_signer
    from tests.client.client_helpers import TokenServer

    from .conftest import RegistryProc

    def fetch(realm: str, service: str, user: str, password: str, scope: str) -> str:
        req = urllib.request.Request(f"{realm}?service={service}&scope={scope}", headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["token"]

    with TokenServer(tmp_path / "ts", {"tester": "s3cret"}) as ts:
        srv = fresh_server
        srv.args = ["--token-realm", ts.realm, "--token-issuer", ts.issuer, "--token-service", ts.service,
                    "--token-cert", str(ts.bundle)]
        srv.start()
        r = srv.client().request("GET", "/v2/app/manifests/1")
        assert challenge(r.header("WWW-Authenticate")) == {"realm": ts.realm, "service": ts.service,
                                                           "scope": "repository:app:pull"}
        assert srv.client().request("GET", "/token").status == 404  # no endpoint of its own
        tok = fetch(ts.realm, ts.service, "tester", "s3cret", "repository:app:pull,push")
        digest, raw = srv.client(auth=f"Bearer {tok}").push_image("app", "1")
        r = srv.client(auth=f"Bearer {tok}").request("GET", "/v2/_catalog")
        assert r.status == 401 and challenge(r.header("WWW-Authenticate"))["scope"] == "registry:catalog:*"
        cat = fetch(ts.realm, ts.service, "tester", "s3cret", "registry:catalog:*")
        assert srv.client(auth=f"Bearer {cat}").request("GET", "/v2/_catalog").json()["repositories"] == ["app"]
        assert srv.client().request("GET", "/v2/app/manifests/1").status == 401  # no token, no pull
        srv.stop()

    # another soko issues the tokens (key named by kid), this one only checks them
    key, cert = make_signer(tmp_path / "issuer-keys", ec_key=False)
    issuer = RegistryProc(tmp_path / "issuer-root")
    issuer.configure(team_config(token={"key": str(key), "cert": str(cert), "service": "shared",
                                        "issuer": "soko-a"})).start()
    try:
        checker = RegistryProc(tmp_path / "checker-root")
        checker.args = ["--token-realm", f"http://127.0.0.1:{issuer.port}/token", "--token-issuer", "soko-a",
                        "--token-service", "shared", "--token-cert", str(cert)]
        checker.start()
        try:
            tok = fetch(f"http://127.0.0.1:{issuer.port}/token", "shared", "alice", PASSWORDS["alice"],
                        "repository:team/app:pull,push")
            checker.client(auth=f"Bearer {tok}").push_image("team/app", "1")
            bob = fetch(f"http://127.0.0.1:{issuer.port}/token", "shared", "bob", PASSWORDS["bob"],
                        "repository:team/app:pull,push")
            c = checker.client(auth=f"Bearer {bob}")
            assert c.request("GET", "/v2/team/app/manifests/1").status == 200
            r = c.request("POST", "/v2/team/app/blobs/uploads/")
            assert r.status == 401 and challenge(r.header("WWW-Authenticate"))["error"] == "insufficient_scope"
        finally:
            checker.stop()
    finally:
        issuer.stop()
