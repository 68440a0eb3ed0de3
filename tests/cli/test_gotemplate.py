"""soko's Go templates (soko/gotemplate.py) and Docker's formatter (soko/formatter.py).

Expected outputs are what Go's text/template and Docker 20.10's CLI print for the same
template and data (checked against a real dockerd in tests/interop/test_docker_cli_shapes.py)."""
from __future__ import annotations

import pytest

from soko.formatter import FormatRow, render, tabwrite
from soko.gotemplate import NIL_MAP, NIL_SLICE, TemplateError, parse
from soko.gotemplate_funcs import go_sprintf, go_str

DATA = {
    "Id": "sha256:abc", "Os": "linux", "Size": 2291817, "Ratio": 0.5,
    "RepoTags": ["demo:1", "demo:2"], "Empty": [],
    "Config": {"Labels": {"org.x": "1", "a": "<b>"}, "Env": NIL_SLICE, "Cmd": ["sh", "-c", "x"],
               "Volumes": NIL_MAP, "Tty": False},
    "Metadata": None,
}


@pytest.mark.parametrize("template,expected", [
    ("{{.Id}}", "sha256:abc"),
    ("plain text", "plain text"),
    ("{{.Config.Cmd}}", "[sh -c x]"),
    ("{{.Config.Env}}|{{.Config.Volumes}}|{{.Config.Tty}}", "[]|map[]|false"),
    ("{{.Config.Labels}}", "map[a:<b> org.x:1]"),
    ("{{.Nope}}", "<no value>"),
    ("{{.Metadata}}", "<nil>"),
    ("{{.Size}} {{.Ratio}}", "2291817 0.5"),
    ("{{json .Config.Labels}}", '{"org.x":"1","a":"<b>"}'),  # Docker's json: no HTML escaping
    ("{{json .Config.Env}} {{json .Empty}}", "null []"),
    ("{{range .RepoTags}}{{.}} {{end}}", "demo:1 demo:2 "),
    ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}};{{end}}", "0=demo:1;1=demo:2;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "a=<b>,org.x=1,"),  # maps in key order
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ("{{range .Config.Env}}x{{else}}nil{{end}}", "nil"),
    ('{{index .Config.Labels "org.x"}}|{{index .Config.Labels "no"}}|{{index .RepoTags 1}}', "1||demo:2"),
    ('{{join .RepoTags ", "}}', "demo:1, demo:2"),
    ('{{split "a:b:c" ":"}}', "[a b c]"),
    ("{{if .Config.Cmd}}cmd{{else}}none{{end}}", "cmd"),
    ("{{if .Empty}}a{{else if .Nope}}b{{else}}c{{end}}", "c"),
    ('{{if eq .Os "windows" "linux"}}yes{{end}}', "yes"),
    ("{{if and .Os (not .Empty)}}ok{{end}}{{or .Empty .Os}}", "oklinux"),
    ("{{if gt .Size 1000}}big{{end}}{{if lt 1 2}}<{{end}}", "big<"),
    ("{{with .Config}}{{.Cmd}}{{end}}{{with .Empty}}no{{else}}empty{{end}}", "[sh -c x]empty"),
    ('{{printf "%s-%d" .Os .Size}}', "linux-2291817"),
    ('{{printf "%5s|%-5s|%05d|%x|%q|%v|%t|%.2f" "a" "b" 42 255 "q" .RepoTags true 3.14159}}',
     '    a|b    |00042|ff|"q"|[demo:1 demo:2]|true|3.14'),
    ("{{len .RepoTags}} {{len .Config.Labels}} {{len .Os}} {{len .Config.Env}}", "2 2 5 0"),
    ("{{upper .Os}} {{lower \"ABC\"}} {{title \"hello world\"}}", "LINUX abc Hello World"),
    ("{{.Os | upper | printf \"<%s>\"}}", "<LINUX>"),
    ("{{println .Os}}", "linux\n"),
    ("{{print .Os 1 2 \"x\"}}", "linux1 2x"),
    ("{{$x := .Os}}{{$x}}{{$x = \"y\"}}{{$x}}", "linuxy"),
    ("{{$.Os}}{{range .RepoTags}}{{$.Os}}{{end}}", "linuxlinuxlinux"),
    ("a {{- \" b \" -}} c", "a b c"),
    ("a {{/* a comment */}}b", "a b"),
    ("{{(index .RepoTags 0)}}", "demo:1"),
    ("{{pad .Os 1 2}}|{{truncate .Os 3}}", " linux  |lin"),
    ('{{"a\\tb"}}{{`raw\\t`}}', "a\tbraw\\t"),
])
def test_templates_render_as_go_does(template, expected):
    assert parse(template).execute(DATA) == expected


@pytest.mark.parametrize("template,message", [
    ("{{.Id", "template: :1: unclosed action"),
    ("{{if .Id}}x", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{nosuch .Id}}", 'template: :1: function "nosuch" not defined'),
    ("{{range .Id}}{{else}}{{else}}{{end}}", "expected end; found {{else}}"),
    ("{{(.Id}}", "unclosed left paren"),
    ("{{.Id | }}", "missing command"),
])
def test_bad_templates_are_refused_when_parsed(template, message):
    with pytest.raises(TemplateError) as e:
        parse(template)
    assert message in str(e.value)


@pytest.mark.parametrize("template,message", [
    ("{{.Size.X}}", "can't evaluate field X in type int"),
    ("{{.Metadata.LastTagTime}}", "nil pointer evaluating .Metadata.LastTagTime"),
    ("{{index .RepoTags 5}}", "index out of range: 5"),
    ("{{range .Size}}{{end}}", "range can't iterate over 2291817"),
    ("{{join .Os \",\"}}", "wrong type for value"),
    ("{{$nope}}", "undefined variable: $nope"),
])
def test_templates_fail_at_execution_with_gos_words(template, message):
    with pytest.raises(TemplateError) as e:
        parse(template).execute(DATA)
    assert message in str(e.value)


def test_go_value_printing_and_printf_corner_cases():
    assert go_str(2291817.0) == "2.291817e+06" and go_str(100000.0) == "100000" and go_str(1e-05) == "1e-05"
    assert go_sprintf("%d %s", 1) == "1 %!s(MISSING)"
    assert go_sprintf("%d", "x") == "%!d(string=x)"
    assert go_sprintf("x", 1) == "x%!(EXTRA int=1)"
    assert go_sprintf("100%%") == "100%"


ROWS = [FormatRow({"Repository": "demo", "Tag": "1", "ID": "2d795a3d1e74", "Size": "2.29MB"}, "*formatter.imageContext"),
        FormatRow({"Repository": "busybox", "Tag": "local", "ID": "fbb3e78e2a50", "Size": "1.98MB"},
                  "*formatter.imageContext")]
HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Size": "SIZE"}


def test_table_format_lays_out_columns_as_docker_does():
    """Go's tabwriter with Docker's settings: min width 10, padding 3, the last column unpadded;
    header functions leave the header names alone; `\\t` in the flag text is a tab."""
    out = render("table {{.Repository}}\\t{{upper .Tag}}\\t{{.ID}}", ROWS, HEADERS, "")
    assert out == ("REPOSITORY   TAG       IMAGE ID\n"
                   "demo         1         2d795a3d1e74\n"
                   "busybox      LOCAL     fbb3e78e2a50\n")
    assert render("{{.Repository}}:{{.Tag}}", ROWS, HEADERS, "") == "demo:1\nbusybox:local\n"
    assert render(None, ROWS, HEADERS, "table {{.ID}}\t{{.Size}}") == \
        "IMAGE ID       SIZE\n2d795a3d1e74   2.29MB\nfbb3e78e2a50   1.98MB\n"
    # `{{json .}}` marshals the row as Docker marshals its contexts: keys sorted, HTML escaped
    assert render("json", [FormatRow({"b": "<none>", "a": 1})], {}, "") == '{"a":1,"b":"\\u003cnone\\u003e"}\n'


def test_tabwriter_column_blocks():
    # a line with fewer cells ends the column block above it, as in Go
    assert tabwrite("a\tb\tc\nlonger-than-ten\tx\n\nq\tr").split("\n") == [
        "a".ljust(18) + "b".ljust(10) + "c", "longer-than-ten".ljust(18) + "x", "", "q".ljust(10) + "r"]
    assert tabwrite("x\t\n") == "x         \n"  # an empty last cell: the padding stays (Docker's history)


def test_unknown_field_of_a_row_names_its_type():
    with pytest.raises(Exception) as e:
        render("{{.Foo}}", ROWS, HEADERS, "")
    assert str(e.value) == ('template parsing error: template: :1:2: executing "" at <.Foo>: '
                            "can't evaluate field Foo in type *formatter.imageContext")
