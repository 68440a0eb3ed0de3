"""The web UI in a real browser (headless Chromium): what a person does with it."""
from __future__ import annotations

import pytest

from .conftest import USERS
from .images import HOSTILE

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
