"""The UI's small parts on their own: who counts as a browser, where a sign-in may
lead, how history lines pair with layers, sessions' ends; and documents whose
fields hold the wrong types still make a page."""
from __future__ import annotations

import json

import pytest

from registry.server.ui import prefers_html
from registry.server.ui.images import layer_history
from registry.server.ui.sessions import Sessions
from registry.server.ui.signin import safe_next
from storage.model import Descriptor
from tests.registry.conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryProc, sha256

from .visitor import Visitor


@pytest.mark.parametrize("accept, browser", [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", True),  # Chromium
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Firefox
    ("text/html", True),
    ("", False), ("*/*", False), ("application/json", False),
    ("application/json, text/html;q=0.5", False), ("text/html;q=0", False),
    ("application/vnd.oci.image.manifest.v1+json, text/html", True),  # equal rank: a person asked for a page
])
def test_who_counts_as_a_browser(accept, browser):
    assert prefers_html(accept) is browser


@pytest.mark.parametrize("target, where", [
    ("/ui/repositories/team/app", "/ui/repositories/team/app"), ("/ui/?q=x&page=2", "/ui/?q=x&page=2"),
    ("//evil.example/ui/", "/ui/"), ("https://evil.example/ui/", "/ui/"), ("/ui\\..\\x", "/ui/"),
    ("/v2/_catalog", "/ui/"), ("", "/ui/"), (None, "/ui/"), ("javascript:alert(1)", "/ui/"),
])
def test_a_sign_in_only_leads_to_pages_of_the_ui(target, where):
    assert safe_next(target) == where


def _d(i: int) -> Descriptor:
    return Descriptor(OCI_LAYER, sha256(str(i).encode()), 100 + i)


def test_history_lines_pair_with_the_layers_they_made():
    layers = [_d(1), _d(2)]
    got = layer_history([{"created_by": "ADD"}, {"created_by": "ENV", "empty_layer": True}, {"created_by": "RUN"}],
                        layers)
    assert [(x.created_by, x.digest) for x in got] == [("ADD", layers[0].digest), ("ENV", None),
                                                       ("RUN", layers[1].digest)]
    # more layers than history (squashed, hand-made): the rest still show, without a line
    got = layer_history([{"created_by": "ADD"}], layers)
    assert [(x.created_by, x.digest) for x in got] == [("ADD", layers[0].digest), ("", layers[1].digest)]
    # junk in the history is skipped; a history that is not a list means no lines at all
    assert [x.digest for x in layer_history(["junk", 3, {"created_by": "X"}], layers[:1])] == [layers[0].digest]
    assert [x.created_by for x in layer_history("nope", layers)] == ["", ""]


def test_sessions_end_by_age_idleness_cap_and_drop(monkeypatch):
    import registry.server.ui.sessions as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    s = Sessions(ttl=100, idle=30, max_sessions=2)
    a = s.create("alice", "f1")
    assert s.get(a).account == "alice"
    now[0] += 29
    assert s.get(a) is not None  # used: the idle clock starts again
    now[0] += 29
    assert s.get(a) is not None
    now[0] += 31
    assert s.get(a) is None  # idle too long
    b = s.create("bob", None)
    now[0] += 25
    s.get(b)
    now[0] += 25
    s.get(b)
    now[0] += 25
    s.get(b)
    now[0] += 26
    assert s.get(b) is None  # past its ttl however busy
    c, d, e = s.create("c", None), s.create("d", None), s.create("e", None)
    assert s.get(c) is None and s.get(d) and s.get(e) and len(s) == 2  # the cap pushes the oldest out
    s.drop(d)
    assert s.get(d) is None
    assert s.csrf_ok(e, s.csrf(e)) and not s.csrf_ok(e, s.csrf(d)) and not s.csrf_ok(None, s.csrf(e))
    assert not s.csrf_ok(e, "") and Sessions(1, 1).csrf(e) != s.csrf(e)  # each server has its own secret


def test_a_config_with_fields_of_the_wrong_types_still_makes_a_page(tmp_path):
    proc = RegistryProc(tmp_path / "root").start()
    c = proc.client()
    v = Visitor(proc.port)
    try:
        cfg = json.dumps({"architecture": ["amd64"], "os": {"x": 1}, "created": 5,
                          "config": {"Env": "PATH=/bin", "Labels": ["not", "a", "map"], "ExposedPorts": "80/tcp",
                                     "Cmd": "echo hi", "Entrypoint": None, "User": 0, "Volumes": {"/data": {}}},
                          "rootfs": {"type": "layers", "diff_ids": []}, "history": {"not": "a list"}}).encode()
        layer = b"not even a tar"
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": c.push_blob("odd/one", cfg),
                                          "size": len(cfg)},
                               "layers": [{"mediaType": OCI_LAYER, "digest": c.push_blob("odd/one", layer),
                                           "size": len(layer)}],
                               "annotations": {"k": "v"}}).encode()
        assert c.put_manifest("odd/one", "v1", manifest).status == 201
        html = v.page("/ui/images/odd/one:v1").split('<section aria-labelledby="raw-h">')[0]  # not the raw JSON
        assert "PATH=/bin" in html and "echo hi" in html and "80/tcp" in html and "/data" in html
        assert "14 B" in html  # the layer, listed though no history line made it
        assert "odd/one" in v.page("/ui/") and "v1" in v.page("/ui/repositories/odd/one")
        assert "Traceback" not in proc.errors()
    finally:
        v.close()
        c.close()
        proc.stop()
