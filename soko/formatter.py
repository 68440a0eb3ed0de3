"""Docker's `--format` handling for listings (images, history, version, ...).

A listing is a sequence of rows, each a FormatRow (Docker's "formatter context":
named fields, each with a column header). `--format` takes:
- `table` or nothing: the command's default table;
- `table TEMPLATE`: a header row (the template run over the headers) and a row per item,
  laid out by Go's tabwriter as Docker does (min width 10, padding 3);
- `json`: one `{{json .}}` line per row (Docker CLI 23+);
- any other TEMPLATE: run once per row, each followed by a newline.
As Docker does, a literal `\\t` or `\\n` in the format is a tab or a newline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from . import gotemplate


@dataclass
class FormatRow:
    """One row: `fields` by name (what templates see), `type_name` for Go's error wording."""
    fields: dict[str, Any]
    type_name: str = "*formatter.context"

    @property
    def template_type(self) -> str:
        return self.type_name

    def template_field(self, name: str) -> Any:
        return self.fields[name]  # KeyError: "can't evaluate field"

    def template_json(self) -> dict[str, Any]:
        """`{{json .}}`: Docker marshals its contexts as a map, so keys come sorted."""
        return {k: self.fields[k] for k in sorted(self.fields)}


def prepare(fmt: str) -> tuple[bool, str]:
    """(is a table, the template text) as Docker's formatter preFormat does."""
    table = fmt.startswith("table")
    text = fmt[len("table"):] if table else fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return table, text


def parse_template(text: str) -> gotemplate.Template:
    """A template, or a SokoError in Docker's words (`template parsing error: ...`)."""
    try:
        return gotemplate.parse(text)
    except gotemplate.TemplateError as e:
        from .errors import SokoError

        raise SokoError(f"template parsing error: {e}") from None


def execute(tmpl: gotemplate.Template, data: Any, missing_key_error: bool = False) -> str:
    try:
        return tmpl.execute(data, missing_key_error=missing_key_error)
    except gotemplate.TemplateError as e:
        from .errors import SokoError

        raise SokoError(f"template parsing error: {e}") from None


def render(fmt: str | None, rows: Iterable[FormatRow], headers: dict[str, str], default_table: str) -> str:
    """The listing's text (no trailing newline handling: each row ends with one)."""
    fmt = fmt or "table"
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt == "table":
        fmt = default_table
    table, text = prepare(fmt)
    tmpl = parse_template(text)
    body = "".join(execute(tmpl, row) + "\n" for row in rows)
    if not table:
        return body
    header = tmpl.execute(headers, funcs=gotemplate.HEADER_FUNCS) if headers else ""
    return tabwrite(header + "\n" + body)


def render_one(fmt: str, data: Any) -> str:
    """A template over one object (inspect, version, info): its text plus a newline, as Docker
    prints it; a key the object lacks is an error, as in `docker inspect`."""
    _, text = prepare(fmt)
    return execute(parse_template(text), data, missing_key_error=True) + "\n"


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter (flags 0, pad char ' '): tab-terminated cells, aligned per column block."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = [""] * len(lines)
    widths: list[int] = []

    def fmt_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                write(this, this + 1)
                this += 1
                continue
            width = minwidth
            end = this
            while end < line1 and column < len(lines[end]) - 1:
                width = max(width, _width(lines[end][column]) + padding)
                end += 1
            widths.append(width)
            fmt_block(this, end)
            widths.pop()
            this = end

    def write(a: int, b: int) -> None:
        for i in range(a, b):
            cells = lines[i]
            parts = []
            for j, cell in enumerate(cells):
                if j < len(cells) - 1 and j < len(widths):
                    parts.append(cell + " " * (widths[j] - _width(cell)))
                else:
                    parts.append(cell)
            out[i] = "".join(parts)

    fmt_block(0, len(lines))
    return "\n".join(out)


def _width(cell: str) -> int:
    return len(cell)  # runes, as tabwriter counts them


def headers_for(fields: Sequence[str], names: dict[str, str]) -> dict[str, str]:
    return {f: names.get(f, f.upper()) for f in fields}
