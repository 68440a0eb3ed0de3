"""The UI over plain HTTP: headers, cookies, sessions, CSRF, access rules, the root
redirect and turning the UI off; a real `soko serve` (or python -m registry.server)."""
from __future__ import annotations

import json
import re
import ssl
import time

import pytest

from tests.registry.conftest import Client, RegistryProc
from tests.registry.teams import basic

from .conftest import ROBOT, ROBOT_SECRET, USERS, htpasswd_file, start_registry
from .images import push_image
from .visitor import BROWSER_ACCEPT, Visitor


@pytest.fixture
def visitor(ui_registry):
    v = Visitor(ui_registry.proc.port)
    yield v
    v.close()


def _repos(html: str) -> set[str]:
    return set(re.findall(r'<a href="/ui/repositories/([^"]+)">', html))


def _delete_buttons(html: str) -> int:
    return len(re.findall(r">Delete</button>", html))


def test_security_headers_on_every_kind_of_answer(visitor):
    for path in ("/ui/", "/ui/login", "/ui/registry", "/ui/static/ui.css", "/ui/static/ui.js",
                 "/ui/repositories/no/such", "/favicon.ico", "/ui"):
        r = visitor.get(path)
        csp = r.header("Content-Security-Policy") or ""
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "script-src 'self'" in csp, path
        assert r.header("X-Content-Type-Options") == "nosniff", path
        assert r.header("X-Frame-Options") == "DENY", path
    html = visitor.page("/ui/")
    assert "<script>" not in html and "style=" not in html and "<style" not in html  # nothing inline
    assert re.search(r'<script src="/ui/static/ui.js" defer></script>', html)


def test_favicon_and_static_files(visitor):
    r = visitor.get("/favicon.ico")
    assert r.status == 200 and r.header("Content-Type") == "image/svg+xml" and r.body.startswith(b"<svg")
    assert visitor.get("/ui/static/favicon.svg").status == 200
    assert visitor.get("/ui/static/ui.css").header("Content-Type").startswith("text/css")
    assert visitor.get("/ui/static/ui.js").header("Content-Type").startswith(("text/javascript",
                                                                              "application/javascript"))
    assert visitor.get("/ui/static/../app.py").status == 404
    assert visitor.get("/ui/static/nothing.js").status == 404


def test_the_root_sends_browsers_to_the_ui_and_leaves_api_clients_alone(ui_registry, visitor):
    r = visitor.get("/")
    assert r.status == 303 and r.header("Location") == "/ui/"
    api = ui_registry.proc.client()
    for accept in (None, "*/*", "application/json", "application/json, text/html;q=0.5"):
        r = api.request("GET", "/", headers={"Accept": accept} if accept else {})
        assert r.status == 404 and r.json()["errors"][0]["code"] == "UNSUPPORTED", accept
    r = api.request("POST", "/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status == 404 and r.header("Content-Type") == "application/json"
    assert api.request("GET", "/v2/", headers={"Accept": BROWSER_ACCEPT}).status == 401  # the API as before
    api.close()


def test_session_cookie_flags_and_logout_ends_the_session(ui_registry, visitor):
    r = visitor.login("alice", USERS["alice"])
    assert r.status == 303 and r.header("Location") == "/ui/"
    cookie = [c for c in visitor.set_cookies if c.startswith("soko_session=")][-1]
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
    assert "Signed in as <strong>alice</strong>" in visitor.page("/ui/")
    stolen = dict(visitor.cookies)
    name, token = visitor.csrf("/ui/")
    r = visitor.request("POST", "/ui/logout", form={name: token})
    assert r.status == 303 and "soko_session" not in visitor.cookies
    replay = Visitor(ui_registry.proc.port)
    replay.cookies = stolen  # the old cookie, sent again: the session is gone on the server
    html = replay.page("/ui/")
    assert "Signed in" not in html and "team/app" not in _repos(html)
    assert replay.get("/ui/repositories/team/app").status == 303  # to the sign-in page
    replay.close()


def test_logout_without_the_csrf_token_keeps_the_session(ui_registry, visitor):
    visitor.login("alice", USERS["alice"])
    r = visitor.request("POST", "/ui/logout", form={})
    assert r.status == 403
    assert "Signed in as <strong>alice</strong>" in visitor.page("/ui/")


def test_a_forged_delete_without_the_right_csrf_token_changes_nothing(ui_registry, visitor):
    c = ui_registry.client()
    push_image(c, "team/forged", "keep")
    c.close()
    visitor.login("alice", USERS["alice"])
    name, token = visitor.csrf("/ui/repositories/team/forged")
    other = Visitor(ui_registry.proc.port)
    other.login("alice", USERS["alice"])
    _, other_token = other.csrf("/ui/")  # a real token, of another session
    other.close()
    form = {"repository": "team/forged", "tag": "keep"}
    for forged, headers in (({}, {}), ({name: ""}, {}), ({name: "0" * 64}, {}), ({name: other_token}, {}),
                            ({name: token}, {"Origin": "http://evil.example"})):
        r = visitor.request("POST", "/ui/tags/delete", form={**form, **forged}, headers=headers)
        assert r.status == 403, (forged, headers, r.status)
        assert ui_registry.tags("team/forged") == ["keep"]
    r = visitor.request("POST", "/ui/tags/delete", form={**form, name: token})
    assert r.status == 303 and ui_registry.tags("team/forged") == []


def test_signing_in_needs_the_forms_token_too(ui_registry, visitor):
    r = visitor.request("POST", "/ui/login", form={"username": "alice", "password": USERS["alice"]})
    assert r.status == 403 and "soko_session" not in visitor.cookies


def test_logins_and_deletes_from_the_ui_are_events_like_the_apis(tmp_path):
    audit = tmp_path / "audit.jsonl"
    proc = start_registry(tmp_path, {"audit_log": str(audit)})
    c = proc.client(auth=basic("alice", USERS["alice"]))
    push_image(c, "team/audited", "gone")
    c.close()
    v = Visitor(proc.port)
    try:
        r = v.login("alice", "wrong")
        assert r.status == 200 and "Wrong user name or password" in r.body.decode()
        assert "soko_session" not in v.cookies
        assert v.login("alice", USERS["alice"]).status == 303
        name, token = v.csrf("/ui/")
        r = v.request("POST", "/ui/tags/delete", form={name: token, "repository": "team/audited", "tag": "gone"})
        assert r.status == 303
        wanted = {("login", "alice", "failed", None), ("login", "alice", "ok", None),
                  ("delete", "alice", "ok", "gone")}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            events = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
            seen = {(e["action"], e["actor"], e["outcome"], e.get("tag")) for e in events}
            if wanted <= seen:
                break
            time.sleep(0.1)
        assert wanted <= seen, seen
    finally:
        v.close()
        proc.stop()


def test_each_account_sees_only_what_it_may_pull_and_deletes_only_where_it_may(ui_registry):
    everyone = {"team/app", "team/web", "public/hello", "public/evil", "ci/build", "bob/tool", "secret/stuff"}
    seen = {}
    for user, password in (("alice", USERS["alice"]), ("bob", USERS["bob"]), (ROBOT, ROBOT_SECRET), (None, None)):
        v = Visitor(ui_registry.proc.port)
        if user:
            assert v.login(user, password).status == 303, user
        seen[user] = _repos(v.page("/ui/")) & everyone
        if user == "bob":
            assert _delete_buttons(v.page("/ui/repositories/team/app")) == 0  # pull only
            assert _delete_buttons(v.page("/ui/repositories/bob/tool")) == 1
            assert v.get("/ui/repositories/secret/stuff").status == 404  # not even its existence
            assert v.get("/ui/images/secret/stuff:x").status == 404
            name, token = v.csrf("/ui/repositories/team/app")
            r = v.request("POST", "/ui/tags/delete", form={name: token, "repository": "team/app", "tag": "v1"})
            assert r.status == 403 and "v1" in ui_registry.tags("team/app")
        if user is None:
            assert v.get("/ui/repositories/team/app").status == 303  # anonymous: sign in first
            assert v.get("/ui/images/public/hello:latest").status == 200
        v.close()
    assert seen["alice"] == everyone
    assert seen["bob"] == {"team/app", "team/web", "public/hello", "public/evil", "bob/tool"}
    assert seen[ROBOT] == {"ci/build", "public/hello", "public/evil"}
    assert seen[None] == {"public/hello", "public/evil"}


def test_search_text_is_escaped_and_the_next_page_stays_on_this_site(ui_registry, visitor):
    html = visitor.page("/ui/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    name, token = visitor.csrf("/ui/login")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/v2/_catalog"):
        v = Visitor(ui_registry.proc.port)
        name, token = v.csrf("/ui/login")
        r = v.request("POST", "/ui/login", form={name: token, "username": "alice", "password": USERS["alice"],
                                                   "next": target})
        assert r.status == 303 and r.header("Location") == "/ui/", target
        v.close()


def test_sessions_end_when_idle_and_when_the_password_changes(tmp_path):
    proc = start_registry(tmp_path, {"ui": {"session_idle": 1.5}})
    try:
        idle = Visitor(proc.port)
        idle.login("alice", USERS["alice"])
        assert "Signed in" in idle.page("/ui/")
        time.sleep(2.0)
        assert "Signed in" not in idle.page("/ui/")
        v = Visitor(proc.port)
        v.login("bob", USERS["bob"])
        assert "Signed in as <strong>bob</strong>" in v.page("/ui/")
        htpasswd_file(tmp_path / "htpasswd", {**USERS, "bob": "new-password"})
        time.sleep(1.2)  # the htpasswd file is looked at once a second
        assert "Signed in" not in v.page("/ui/")
    finally:
        proc.stop()


def test_session_cookie_is_secure_under_tls(tmp_path):
    proc = start_registry(tmp_path, args=("--tls-self-signed",))
    try:
        tls = ssl.create_default_context(cafile=str(tmp_path / "root" / "tls" / "self-signed.crt"))
        tls.check_hostname = False
        v = Visitor(proc.port, tls=tls)
        v.login("alice", USERS["alice"])
        cookie = [c for c in v.set_cookies if c.startswith("soko_session=")][-1]
        assert "secure" in [f.strip().lower() for f in cookie.split(";")]
        assert [c for c in v.set_cookies if c.startswith("soko_csrf=")] and \
            all("Secure" in c for c in v.set_cookies)
        v.close()
    finally:
        proc.stop()


def test_no_ui_flag_and_config_key_turn_it_off(tmp_path, soko):
    import subprocess
    import sys

    from tests.conftest import REPO

    p = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), "serve", "--addr", "127.0.0.1:0",
                          "--root", str(tmp_path / "reg"), "--no-ui"], stderr=subprocess.PIPE, cwd=REPO,
                         env=soko.env)
    try:
        line = p.stderr.readline().decode()
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        for path in ("/", "/ui/", "/favicon.ico"):
            r = Client("127.0.0.1", port).request("GET", path, headers={"Accept": BROWSER_ACCEPT})
            assert r.status == 404 and r.header("Content-Type") == "application/json", path
    finally:
        p.terminate()
        p.wait(10)
    proc = RegistryProc(tmp_path / "root2").configure({"ui": {"enabled": False}}).start()
    try:
        r = proc.client().request("GET", "/ui/", headers={"Accept": BROWSER_ACCEPT})
        assert r.status == 404 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    finally:
        proc.stop()
    on = RegistryProc(tmp_path / "root3").start()  # the default: on, open registry, nothing to sign in to
    try:
        html = Visitor(on.port).page("/ui/")
        assert "No repositories yet" in html and "Log in" not in html
    finally:
        on.stop()


def test_read_only_registry_offers_no_delete(tmp_path):
    proc = start_registry(tmp_path)
    c = proc.client(auth=basic("alice", USERS["alice"]))
    push_image(c, "team/ro", "v1")
    c.close()
    proc.args.append("--read-only")
    proc.restart()
    v = Visitor(proc.port)
    try:
        v.login("alice", USERS["alice"])
        assert _delete_buttons(v.page("/ui/repositories/team/ro")) == 0
        name, token = v.csrf("/ui/")
        r = v.request("POST", "/ui/tags/delete", form={name: token, "repository": "team/ro", "tag": "v1"})
        assert r.status == 403
    finally:
        v.close()
        proc.stop()


def test_users_of_the_config_file_sign_in_too(tmp_path):
    from tests.registry.teams import bcrypt_hash

    from .conftest import RULES

    proc = start_registry(tmp_path, {"users": {"carol": bcrypt_hash("carol-pw")},
                                     "access": [*RULES, {"account": "carol", "repository": "carol/*",
                                                         "actions": ["pull"]}]})
    c = proc.client(auth=basic("alice", USERS["alice"]))
    push_image(c, "carol/notes", "v1")
    push_image(c, "team/app", "v1")
    c.close()
    v = Visitor(proc.port)
    try:
        assert v.login("carol", "wrong").status == 200 and "soko_session" not in v.cookies
        assert v.login("carol", "carol-pw").status == 303
        assert _repos(v.page("/ui/")) == {"carol/notes"}
        assert _delete_buttons(v.page("/ui/repositories/carol/notes")) == 0
    finally:
        v.close()
        proc.stop()


def test_a_pull_through_cache_offers_no_delete(tmp_path):
    from tests.registry.conftest import OCI_MANIFEST

    up = RegistryProc(tmp_path / "upstream").start()
    proxy = RegistryProc(tmp_path / "proxy").configure({"proxy": {"remoteurl": f"http://127.0.0.1:{up.port}"}})
    proxy.start()
    c = up.client()
    push_image(c, "team/cached", "v1")
    c.close()
    p = proxy.client()
    v = Visitor(proxy.port)
    try:
        assert p.request("GET", "/v2/team/cached/manifests/v1", headers={"Accept": OCI_MANIFEST}).status == 200
        html = v.page("/ui/repositories/team/cached")
        assert ">v1</a>" in html and _delete_buttons(html) == 0
        name, token = v.csrf()  # the sign-in form's: an open registry has no other form for anonymous
        r = v.request("POST", "/ui/tags/delete", form={name: token, "repository": "team/cached", "tag": "v1"})
        assert r.status == 403 and "pull-through cache" in r.body.decode()
        assert ">v1</a>" in v.page("/ui/repositories/team/cached")
    finally:
        v.close()
        p.close()
        proxy.stop()
        up.stop()
