"""`--format` / `-f`: the small part of Go's text/template that soko needs so far.

Supported: `json` (the whole object as JSON), `table` (a header row, then
tab-separated columns), and actions `{{.Field}}`, `{{.A.B}}`, `{{json .}}`,
`{{json .A}}` with text between them; `\\t` and `\\n` in the text are a tab
and a newline, as Docker's CLI takes them. Values print as Go prints them
(maps as `map[k:v]`, lists as `[a b]`, nil as `<no value>`). This module is
the one place templates are evaluated, so a fuller Go-template subset can
replace `render` without touching the commands.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import SokoError

_ACTION = re.compile(r"{{\s*(.*?)\s*}}")


class TemplateError(SokoError):
    """A template that cannot be parsed or evaluated."""


def is_json(fmt: str | None) -> bool:
    return fmt is not None and fmt.strip() == "json"


def is_table(fmt: str | None) -> bool:
    return fmt is not None and fmt.lstrip().startswith("table")


def table_body(fmt: str) -> str:
    """The row template of a `table ...` format."""
    return fmt.lstrip()[len("table"):].lstrip(" ")


def _unescape(text: str) -> str:
    return text.replace("\\t", "\t").replace("\\n", "\n")


def render(template: str, obj: Any) -> str:
    """`template` evaluated with `obj` as dot."""
    if is_json(template):
        return json.dumps(obj, separators=(",", ":"))
    out = []
    pos = 0
    for m in _ACTION.finditer(template):
        out.append(_unescape(template[pos:m.start()]))
        out.append(_action(m.group(1), obj, template))
        pos = m.end()
    rest = template[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"template parsing error: unclosed action in {template!r}")
    out.append(_unescape(rest))
    return "".join(out)


def _action(expr: str, obj: Any, template: str) -> str:
    words = expr.split()
    if len(words) == 2 and words[0] == "json":
        return json.dumps(_lookup(words[1], obj), separators=(",", ":"))
    if len(words) == 1:
        return go_string(_lookup(words[0], obj))
    raise TemplateError(f"template parsing error: unsupported action {{{{{expr}}}}} "
                        "(supported: {{.Field}}, {{json .}}, {{json .Field}})")


def _lookup(path: str, obj: Any) -> Any:
    if path == ".":
        return obj
    if not path.startswith("."):
        raise TemplateError(f"template parsing error: function {path!r} not defined")
    cur = obj
    for name in path[1:].split("."):
        if isinstance(cur, dict):
            if name not in cur:
                raise TemplateError(f'template: executing at <{path}>: map has no entry for key "{name}"')
            cur = cur[name]
        elif cur is None:
            return None
        else:
            try:
                cur = getattr(cur, name)
            except AttributeError:
                raise TemplateError(f"template: executing at <{path}>: can't evaluate field {name}") from None
    return cur


def go_string(value: Any) -> str:
    """A value as Go's fmt prints it in a template."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)
