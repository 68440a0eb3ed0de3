"""soko/templates.py: the Go-template subset behind --format and -f."""
from __future__ import annotations

import pytest

from soko.templates import TemplateError, go_string, is_table, render, table_body

DOC = {"Name": "/web", "State": {"Status": "running", "Pid": 7, "Running": True, "Health": None},
       "Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"b": "2", "a": "1"}}}


def test_fields_json_and_text():
    assert render("{{.Name}}", DOC) == "/web"
    assert render("{{ .State.Status }} pid={{.State.Pid}}", DOC) == "running pid=7"
    assert render("{{json .Config.Cmd}}", DOC) == '["sh","-c","x"]'
    assert render("json", {"A": 1}) == '{"A":1}' == render("{{json .}}", {"A": 1})
    assert render("{{.Name}}\\t{{.State.Running}}\\n", DOC) == "/web\ttrue\n"


def test_go_printing():
    assert go_string({"b": "2", "a": "1"}) == "map[a:1 b:2]"
    assert go_string(["x", 1]) == "[x 1]" and go_string(None) == "<no value>" and go_string(False) == "false"
    assert render("{{.State.Health}}", DOC) == "<no value>"


def test_errors():
    with pytest.raises(TemplateError, match='map has no entry for key "Nope"'):
        render("{{.Nope}}", DOC)
    with pytest.raises(TemplateError, match="unsupported action"):
        render("{{range .Config.Cmd}}{{.}}{{end}}", DOC)
    with pytest.raises(TemplateError, match="unclosed"):
        render("{{.Name", DOC)


def test_table():
    assert is_table("table {{.ID}}") and not is_table("{{.ID}}")
    assert table_body("table {{.ID}}\\t{{.Names}}") == "{{.ID}}\\t{{.Names}}"
