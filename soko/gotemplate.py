"""A subset of Go's text/template, enough for the `--format` templates Docker users script with.

Supported: text and actions with `{{-`/`-}}` trimming and `{{/* comments */}}`; pipelines
(`a | b`); fields (`.A.B`, `$x.A`), `$` and variables (`$x := ...`, `$x = ...`,
`range $i, $e := ...`); string, raw-string, number, boolean and nil literals; parenthesized
pipelines; `if`/`else if`/`else`/`end`, `range`/`else`/`end` (lists, maps in key order), `with`/`else`/`end`; Go's builtins (`and or not len index slice print printf println
eq ne lt le gt ge`) and Docker's (`json join split upper lower title pad truncate`).

Values are plain Python data (dicts, lists, str, int, float, bool, None) or objects with a
`template_field(name)` method (Docker's formatter contexts). Errors are TemplateError with Go's
wording (`template: :1: unexpected EOF`, `... at <.Foo>: can't evaluate field Foo in type ...`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .gotemplate_funcs import (FUNCS, HEADER_FUNCS, NIL_MAP, NIL_SLICE, NO_VALUE, GoStruct,  # noqa: F401
                               TemplateError, TypedNil, go_json, go_sprintf, go_str, plain, truth, type_name)
from .gotemplate_parse import Action, Branch, Command, Node, Parser, Pipeline, Text, Tok  # noqa: F401


# -- execution ----------------------------------------------------------------------------------
class _Scope:
    def __init__(self, vars_: list[dict[str, Any]]):
        self.vars = vars_

    def get(self, name: str, line: int) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f"template: :{line}: undefined variable: {name}")

    def set(self, name: str, value: Any, line: int) -> None:
        for frame in reversed(self.vars):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"template: :{line}: undefined variable: {name}")


@dataclass
class Template:
    """A parsed template; `execute(data)` renders it."""
    source: str
    nodes: list[Node]
    funcs: dict[str, Callable]

    def execute(self, data: Any, funcs: dict[str, Callable] | None = None, missing_key_error: bool = False) -> str:
        """Render over `data`; `missing_key_error` is Go's Option("missingkey=error") (docker inspect)."""
        run = _Run(self.source, {**self.funcs, **(funcs or {})}, missing_key_error)
        out: list[str] = []
        run.nodes(self.nodes, data, _Scope([{"$": data}]), out)
        return "".join(out)


class _Run:
    def __init__(self, src: str, funcs: dict[str, Callable], missing_key_error: bool = False):
        self.src = src
        self.funcs = funcs
        self.missing_key_error = missing_key_error

    def nodes(self, nodes: list[Node], dot: Any, scope: _Scope, out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, Text):
                out.append(n.text)
            elif isinstance(n, Action):
                value = self.pipeline(n.pipe, dot, scope)
                if not n.pipe.decl:
                    out.append(go_str(value))
            else:
                self.branch(n, dot, scope, out)

    def branch(self, n: Branch, dot: Any, scope: _Scope, out: list[str]) -> None:
        inner = _Scope(scope.vars + [{}])
        if n.kind == "range":
            value = self._eval_cmds(n.pipe, dot, inner)
            items = self._range_items(value, n.pipe.line)
            if not items:
                self.nodes(n.orelse, dot, _Scope(scope.vars + [{}]), out)
                return
            for key, elem in items:
                frame = _Scope(scope.vars + [{}])
                if len(n.pipe.decl) == 1:
                    frame.vars[-1][n.pipe.decl[0]] = elem
                elif len(n.pipe.decl) == 2:
                    frame.vars[-1][n.pipe.decl[0]] = key
                    frame.vars[-1][n.pipe.decl[1]] = elem
                self.nodes(n.body, elem, frame, out)
            return
        value = self.pipeline(n.pipe, dot, inner)
        if truth(value):
            self.nodes(n.body, value if n.kind == "with" else dot, inner, out)
        else:
            self.nodes(n.orelse, dot, _Scope(scope.vars + [{}]), out)

    @staticmethod
    def _range_items(value: Any, line: int) -> list[tuple[Any, Any]]:
        if value is None or value is NO_VALUE or isinstance(value, TypedNil):
            return []
        if isinstance(value, dict):
            return [(k, value[k]) for k in sorted(value)]
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
        raise TemplateError(f"template: :{line}: range can't iterate over {go_str(value)}")

    def pipeline(self, pipe: Pipeline, dot: Any, scope: _Scope) -> Any:
        value = self._eval_cmds(pipe, dot, scope)
        if pipe.decl:
            if pipe.assign:
                scope.set(pipe.decl[0], value, pipe.line)
            else:
                scope.vars[-1][pipe.decl[-1]] = value
        return value

    def _eval_cmds(self, pipe: Pipeline, dot: Any, scope: _Scope) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, scope, value, pipe.line)
        return value

    def command(self, cmd: Command, dot: Any, scope: _Scope, piped: Any, line: int) -> Any:
        head = cmd.args[0]
        if isinstance(head, Tok) and head.kind == "ident":
            return self.call(head, cmd.args[1:], dot, scope, piped, line)
        if len(cmd.args) > 1 or piped is not _MISSING:
            if isinstance(head, Tok) and head.kind == "field":
                pass  # a method with arguments: not supported on plain data
            raise TemplateError(f"template: :{line}: can't give argument to non-function {self._show(head)}")
        return self.arg(head, dot, scope, line)

    def call(self, fn: Tok, args: list[Any], dot: Any, scope: _Scope, piped: Any, line: int) -> Any:
        name = fn.value
        if name in ("and", "or"):
            values = [lambda a=a: self.arg(a, dot, scope, line) for a in args]
            if piped is not _MISSING:
                values.append(lambda: piped)
            if not values:
                raise TemplateError(f"template: :{line}: wrong number of args for {name}: want at least 1 got 0")
            result: Any = None
            for get in values:
                result = get()
                if truth(result) != (name == "and"):
                    return result
            return result
        f = self.funcs[name]
        evaluated = [self.arg(a, dot, scope, line) for a in args]
        if piped is not _MISSING:
            evaluated.append(piped)
        try:
            return f(*evaluated)
        except TemplateError as e:
            raise TemplateError(f'template: :{line}:{fn.col}: executing "" at <{name}>: {e}') from None
        except TypeError:
            raise TemplateError(f'template: :{line}:{fn.col}: executing "" at <{name}>: '
                                f"wrong number or type of args for {name}") from None

    def arg(self, a: Any, dot: Any, scope: _Scope, line: int) -> Any:
        if isinstance(a, Pipeline):
            return self._eval_cmds(a, dot, scope)
        if isinstance(a, tuple):  # ("chain", base, fields)
            _, base, fields = a
            start = self.arg(base, dot, scope, line)
            return self.fields(start, fields, base if isinstance(base, Tok) else None, line)
        t: Tok = a
        if t.kind == "field":
            return self.fields(dot, t.value, t, line)
        if t.kind == "dot":
            return dot
        if t.kind == "var":
            return scope.get(t.value, line)
        if t.kind in ("string", "number", "bool", "nil"):
            return t.value
        if t.kind == "ident":
            return self.call(t, [], dot, scope, _MISSING, line)
        raise TemplateError(f"template: :{line}: unexpected {t.value!r} in operand")

    def fields(self, value: Any, names: list[str], tok: Tok | None, line: int) -> Any:
        for i, name in enumerate(names):
            if hasattr(value, "template_field"):
                try:
                    value = value.template_field(name)
                except KeyError:
                    raise self._no_field(tok, names[:i + 1], value, line) from None
            elif isinstance(value, GoStruct) and name not in value and name in value.omitted:
                value = value.omitted[name]
            elif isinstance(value, dict):
                if name not in value and self.missing_key_error:
                    col = self._col(tok, names[:i + 1])
                    raise TemplateError(f'template: :{line}{col}: executing "" at <.{".".join(names[:i + 1])}>: '
                                        f'map has no entry for key "{name}"')
                value = value.get(name, NO_VALUE)
            elif isinstance(value, TypedNil) and value is NIL_MAP:
                value = NO_VALUE
            elif value is None:
                raise self._no_field(tok, names[:i + 1], value, line, nil=True)
            elif value is NO_VALUE:
                return NO_VALUE
            else:
                raise self._no_field(tok, names[:i + 1], value, line)
        return value

    @staticmethod
    def _col(tok: Tok | None, names: list[str]) -> str:
        """Go reports a field chain's error at its last field (`.Config.Foo`: at `.Foo`)."""
        if tok is None:
            return ""
        return f":{tok.col + sum(len(n) + 1 for n in names[:-1]) if tok.kind == 'field' else tok.col}"

    def _no_field(self, tok: Tok | None, names: list[str], value: Any, line: int, nil: bool = False) -> TemplateError:
        col = self._col(tok, names)
        shown = "." + ".".join(names)
        if nil:
            return TemplateError(f'template: :{line}{col}: executing "" at <{shown}>: nil pointer evaluating {shown}')
        return TemplateError(f'template: :{line}{col}: executing "" at <{shown}>: '
                             f"can't evaluate field {names[-1]} in type {type_name(value)}")

    @staticmethod
    def _show(a: Any) -> str:
        if isinstance(a, Tok):
            return "." + ".".join(a.value) if a.kind == "field" else str(a.value)
        return "(pipeline)"


_MISSING = object()


def parse(source: str, funcs: dict[str, Callable] | None = None) -> Template:
    """Parse `source`; raises TemplateError with Go's wording when it is not a valid template."""
    all_funcs = {**FUNCS, **(funcs or {})}
    return Template(source, Parser(source, all_funcs).parse(), all_funcs)


def render(source: str, data: Any) -> str:
    return parse(source).execute(data)
