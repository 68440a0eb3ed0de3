"""The web UI in a real browser (headless Chromium): what a person does with it."""
from __future__ import annotations

import pytest

import http.server
import threading

from .conftest import USERS, open_browser
from .images import HOSTILE, push_image

pytestmark = pytest.mark.interop


def test_log_in_search_open_repository_and_image_delete_a_tag_log_out(browser, ui_registry):
    b = browser
    b.open("/")  # a browser at the root lands on the UI
    assert b.driver.current_url == ui_registry.url + "/ui/"
    assert "team/app" not in b.text()  # anonymous: only public/*
    assert "public/hello" in b.text()
    b.shot("anonymous")

    b.log_in("alice", USERS["alice"])
    assert "Signed in as alice" in b.text()
    session = [c for c in b.driver.get_cookies() if c["name"] == "soko_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert "soko_session" not in b.driver.execute_script("return document.cookie")  # out of scripts' reach
    names = [a.text for a in b.css("table.repos td:first-child a")]
    assert {"team/app", "team/web", "public/hello", "secret/stuff"} <= set(names)
    b.shot("repositories")

    box = b.one("input[type=search][name=q]")
    box.send_keys("team/")  # search as you type: no Enter
    b.wait(lambda: {a.text for a in b.css("table.repos td:first-child a")} == {"team/app", "team/web"},
           what="the list to narrow to team/")
    assert "q=team%2F" in b.driver.current_url or "q=team/" in b.driver.current_url
    b.check_console()
    b.shot("search")

    b.follow(b.link("team/app"))
    assert b.one("h1").text == "team/app"
    rows = {r.find_element("css selector", "td").text: r for r in b.css("table.tags tbody tr")}
    assert set(rows) == {"v1", "v2", "old"}
    assert "linux/amd64" in rows["v1"].text
    b.shot("repository")

    b.follow(b.link("v1"))
    text = b.text()
    v1 = ui_registry.images["app:v1"]
    assert v1.digest in text
    assert "apk add --no-cache curl" in text  # the history line that made the second layer
    assert "APP_MODE=production" in text and '["/usr/bin/app"]' in text and "8080/tcp" in text
    assert "org.opencontainers.image.source" in text
    assert "application/spdx+json" in text and "application/vnd.dev.cosign.artifact.sig.v1+json" in text
    pull = b.one("#pull-docker").text
    assert pull.startswith("docker pull 127.0.0.1:") and pull.endswith("/team/app:v1")
    b.one("button[data-copy=pull-docker]").click()
    b.wait(lambda: b.one("button[data-copy=pull-docker]").text == "Copied", what="the copy button to answer")
    b.shot("image")

    b.follow(b.link("team/app"))
    row = [r for r in b.css("table.tags tbody tr") if r.find_element("css selector", "td").text == "old"][0]
    b.follow(b.button("Delete", row))
    assert "Deleted tag old" in b.text()
    assert [r.find_element("css selector", "td").text for r in b.css("table.tags tbody tr")] == ["v1", "v2"]
    assert sorted(ui_registry.tags("team/app")) == ["v1", "v2"]
    b.shot("deleted")

    b.follow(b.button("Log out"))
    assert "Signed in" not in b.text() and "team/app" not in b.text()
    b.open("/ui/repositories/team/app")
    assert "/ui/login" in b.driver.current_url  # the session is gone
    b.shot("logged-out")


def test_a_hostile_label_renders_as_text_and_no_alert_fires(browser, ui_registry):
    b = browser
    b.open("/ui/images/public/evil:latest")  # anonymous may pull public/*
    assert not b.alert_fired()
    labels = b.one("table.labels").text
    assert HOSTILE in labels  # shown as the characters it is
    assert b.driver.execute_script("return document.querySelectorAll('main script').length") == 0
    b.log_in("alice", USERS["alice"])
    b.open("/ui/images/team/app:v2")  # an annotation
    assert HOSTILE in b.one("table.annotations").text and not b.alert_fired()
    b.shot("hostile")


def test_a_forged_post_from_another_site_and_one_without_the_token_change_nothing(browser, ui_registry):
    c = ui_registry.client()
    push_image(c, "team/target", "precious")
    c.close()
    b = browser
    b.log_in("alice", USERS["alice"])
    # Another site (another port: the same "site" to the browser, so the cookie goes along)
    # whose page posts the delete form by itself.
    evil = f"""<!doctype html><title>win a prize</title>
    <form id=f method=post action="{ui_registry.url}/ui/tags/delete">
    <input name=repository value=team/target><input name=tag value=precious></form>
    <script>document.getElementById("f").submit()</script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = evil.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        b.driver.get(f"http://127.0.0.1:{site.server_address[1]}/")
        b.wait(lambda: b.driver.current_url.startswith(ui_registry.url), what="the forged post")
        b.wait(lambda: "Refused" in b.text(), what="the refusal")
        b.driver.get_log("browser")  # the 403 is this page's expected console line
    finally:
        site.shutdown()
    assert ui_registry.tags("team/target") == ["precious"]
    b.shot("forged-cross-site")
    # On the registry's own page, the same form with its token taken out.
    b.open("/ui/repositories/team/target")
    b.driver.execute_script("document.querySelectorAll('input[name^=csrf]').forEach(i => i.remove())")
    b.follow(b.button("Delete", b.one("table.tags tbody tr")), console=False)
    assert "Refused" in b.text() and ui_registry.tags("team/target") == ["precious"]
    b.open("/ui/repositories/team/target")
    assert [r.find_element("css selector", "td").text for r in b.css("table.tags tbody tr")] == ["precious"]
    b.shot("forged-no-token")


def test_keyboard_alone_reaches_login_and_delete(browser, ui_registry):
    c = ui_registry.client()
    push_image(c, "team/keys", "k1")
    push_image(c, "team/keys", "k2")
    c.close()
    b = browser
    b.open("/ui/")
    from selenium.webdriver.common.keys import Keys

    skip = b.tab_to(lambda el: el.text == "Skip to content", "the skip link")
    assert skip.is_displayed()
    b.tab_to(lambda el: el.text == "Log in" and el.tag_name == "a", "the Log in link")
    b.press(Keys.ENTER)
    b.wait(lambda: "/ui/login" in b.driver.current_url, what="the sign-in page")
    b.settle()
    assert b.driver.switch_to.active_element.get_attribute("name") == "username"  # autofocus
    b.press("alice")
    b.tab_to(lambda el: el.get_attribute("name") == "password", "the password field")
    b.press(USERS["alice"])
    b.press(Keys.ENTER)
    b.wait(lambda: "Signed in as alice" in b.text(), what="signing in")
    b.settle()
    b.tab_to(lambda el: el.get_attribute("name") == "q", "the search field")
    b.press("keys")
    b.wait(lambda: [a.text for a in b.css("table.repos td:first-child a")] == ["team/keys"], what="the search")
    b.tab_to(lambda el: el.text == "team/keys", "the repository link")
    b.press(Keys.ENTER)
    b.wait(lambda: b.css("h1") and b.one("h1").text == "team/keys", what="the repository page")
    b.settle()
    b.tab_to(lambda el: el.text == "Delete" and el.get_attribute("title") == "Delete tag k2", "k2's Delete")
    b.shot("keyboard-delete-focused")
    b.press(Keys.ENTER)
    b.wait(lambda: "Deleted tag k2" in b.text(), what="the deletion")
    b.settle()
    assert ui_registry.tags("team/keys") == ["k1"]
    b.tab_to(lambda el: el.text == "Log out", "Log out", back=True)
    b.press(Keys.ENTER)
    b.wait(lambda: "Signed in" not in b.text(), what="signing out")
    b.settle()


PAGES = ["/ui/", "/ui/?q=team", "/ui/?sort=size&order=desc", "/ui/repositories/team/app",
         "/ui/images/team/app:v1", "/ui/images/team/web:multi", "/ui/registry", "/ui/login"]


def test_every_page_loads_without_console_errors_and_the_index_shows_its_platforms(browser, ui_registry):
    b = browser
    b.log_in("alice", USERS["alice"])
    for i, path in enumerate(PAGES):
        b.open(path)  # asserts an empty console
        assert b.css("h1"), path
    b.open("/ui/images/team/web:multi")
    platforms = b.one("main table.list").text
    assert "linux/amd64" in platforms and "linux/arm64/v8" in platforms
    b.follow(b.css("main table.list tbody tr td a")[1])
    assert "Platform\nlinux/arm64" in b.text() or "linux/arm64" in b.one("dl.facts").text
    b.open("/ui/images/team/app:v1")
    sbom = [a for a in b.css("table.referrers a")][0]
    b.follow(sbom)
    assert "Refers to" in b.text() and ui_registry.images["app:v1"].digest in b.text()
    b.open("/ui/repositories/no/such/repo", console=False)  # a 404's one console line is its status
    assert b.one("h1").text == "No such repository"


def test_a_phone_width_window_has_no_horizontal_scroll(tmp_path, ui_registry):
    for b in open_browser(tmp_path, ui_registry.url):
        b.phone()
        b.log_in("alice", USERS["alice"])
        for path in PAGES:
            b.open(path)
            b.no_horizontal_scroll()
            b.shot("phone-" + path.strip("/").replace("/", "-").replace("?", "-").replace("&", "-") or "home")
        width = b.driver.execute_script("return window.innerWidth")
        assert width == 375
