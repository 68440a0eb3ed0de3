"""Lexing and parsing of soko's Go templates (soko/gotemplate.py runs what this parses)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .gotemplate_funcs import TemplateError


# -- lexing -------------------------------------------------------------------------------------
@dataclass
class Tok:
    kind: str  # text, field, var, ident, string, number, bool, nil, pipe, lparen, rparen, assign, declare, comma, dot
    value: Any
    line: int
    col: int


_TOKEN_RE = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)


def _position(src: str, offset: int) -> tuple[int, int]:
    line = src.count("\n", 0, offset) + 1
    col = offset - (src.rfind("\n", 0, offset) + 1)
    return line, col


def _lex_action(src: str, start: int, end: int) -> list[Tok]:
    toks: list[Tok] = []
    pos = start
    while pos < end:
        m = _TOKEN_RE.match(src, pos, end)
        if not m:
            line, _ = _position(src, pos)
            raise TemplateError(f"template: :{line}: unexpected {src[pos]!r} in command")
        kind = m.lastgroup
        text = m.group()
        line, col = _position(src, pos)
        pos = m.end()
        if kind == "space":
            continue
        if kind == "string":
            value: Any = json.loads(text) if "\\x" not in text else bytes(text[1:-1], "utf-8").decode("unicode_escape")
            toks.append(Tok("string", value, line, col))
        elif kind == "raw":
            toks.append(Tok("string", text[1:-1], line, col))
        elif kind == "char":
            toks.append(Tok("number", ord(bytes(text[1:-1], "utf-8").decode("unicode_escape")), line, col))
        elif kind == "number":
            if text.lstrip("+-").lower().startswith("0x"):
                value = int(text, 16)
            elif re.fullmatch(r"[+-]?\d+", text):
                value = int(text)
            else:
                value = float(text)
            toks.append(Tok("number", value, line, col))
        elif kind == "field":
            toks.append(Tok("field", text[1:].split("."), line, col))
        elif kind == "ident" and text in ("true", "false"):
            toks.append(Tok("bool", text == "true", line, col))
        elif kind == "ident" and text == "nil":
            toks.append(Tok("nil", None, line, col))
        else:
            toks.append(Tok(kind, text, line, col))
    # `$x.Field`: a variable followed directly by a field chain
    merged: list[Tok] = []
    for t in toks:
        if t.kind == "field" and merged and merged[-1].kind in ("var", "rparen") and \
                _adjacent(src, merged[-1], t):
            merged.append(Tok("chain", t.value, t.line, t.col))
        else:
            merged.append(t)
    return merged


def _adjacent(src: str, prev: Tok, cur: Tok) -> bool:
    width = len(prev.value) if prev.kind == "var" else 1
    return prev.line == cur.line and prev.col + width == cur.col


# -- parsing ------------------------------------------------------------------------------------
@dataclass
class Node:
    pass


@dataclass
class Text(Node):
    text: str


@dataclass
class Command:
    args: list[Any]  # Tok or Pipeline (parenthesized) or ("chain", base, fields)


@dataclass
class Pipeline:
    decl: list[str] = field(default_factory=list)
    assign: bool = False  # `$x = ...` (not :=)
    cmds: list[Command] = field(default_factory=list)
    line: int = 1


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class Branch(Node):
    kind: str  # if, range, with
    pipe: Pipeline
    body: list[Node]
    orelse: list[Node]


_KEYWORDS = {"if", "range", "with", "else", "end", "define", "template", "block", "break", "continue"}


class Parser:
    def __init__(self, src: str, funcs: dict[str, Callable]):
        self.src = src
        self.funcs = funcs
        self.items = self._split()
        self.pos = 0

    def _split(self) -> list[tuple[str, Any]]:
        """Text and action pieces, with Go's trim markers applied."""
        src, out, pos = self.src, [], 0
        trim_next = False
        while True:
            i = src.find("{{", pos)
            text = src[pos:] if i < 0 else src[pos:i]
            if trim_next:
                text = text.lstrip(" \t\r\n")
            if i < 0:
                if text:
                    out.append(("text", text))
                return out
            inner_start = i + 2
            if src.startswith("- ", inner_start) or src.startswith("-\t", inner_start) or \
                    src.startswith("-\n", inner_start):
                text = text.rstrip(" \t\r\n")
                inner_start += 1
            if text:
                out.append(("text", text))
            if src.startswith("/*", inner_start) or (inner_start > i + 2 and src.startswith(" /*", inner_start)):
                close = src.find("*/", inner_start)
                if close < 0:
                    raise TemplateError(f"template: :{_position(src, i)[0]}: unclosed comment")
                j = src.find("}}", close)
                if j < 0:
                    raise TemplateError(f"template: :{_position(src, i)[0]}: unclosed action")
                trim_next = src[close + 2:j].strip() == "-"
                pos = j + 2
                continue
            j = self._action_end(inner_start)
            if j < 0:
                raise TemplateError(f"template: :{_position(src, i)[0]}: unclosed action")
            inner_end = j
            trim_next = False
            if j - 2 >= inner_start and src[j - 1] == "-" and src[j - 2] in " \t\n":
                inner_end = j - 1
                trim_next = True
            out.append(("action", (inner_start, inner_end, i)))
            pos = j + 2

    def _action_end(self, start: int) -> int:
        """The `}}` closing an action, skipping quoted strings."""
        src, i = self.src, start
        while i < len(src):
            ch = src[i]
            if ch in "\"`'":
                close = src.find(ch, i + 1)
                while ch != "`" and close > 0 and src[close - 1] == "\\" and src[close - 2] != "\\":
                    close = src.find(ch, close + 1)
                if close < 0:
                    return -1
                i = close + 1
                continue
            if src.startswith("}}", i):
                return i
            if ch == "\n" and src.find("}}", i) < 0:
                return -1
            i += 1
        return -1

    def parse(self) -> list[Node]:
        nodes, stop = self._list()
        if stop is not None:
            kw, line = stop
            raise TemplateError(f"template: :{line}: unexpected {{{{{kw}}}}}")
        return nodes

    def _list(self) -> tuple[list[Node], tuple[str, int] | None]:
        """Nodes up to an `else` or `end` (returned as the stop keyword) or the end of input."""
        nodes: list[Node] = []
        while self.pos < len(self.items):
            kind, value = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(Text(value))
                continue
            start, end, at = value
            toks = _lex_action(self.src, start, end)
            line = _position(self.src, at)[0]
            if not toks:
                raise TemplateError(f"template: :{line}: missing value for command")
            head = toks[0]
            if head.kind == "ident" and head.value in _KEYWORDS:
                kw = head.value
                if kw in ("end", "else"):
                    if kw == "end" and len(toks) > 1:
                        raise TemplateError(f"template: :{line}: unexpected {toks[1].value} in end")
                    self._else_toks = toks[1:]
                    return nodes, (kw, line)
                if kw in ("if", "range", "with"):
                    nodes.append(self._branch(kw, toks[1:], line))
                    continue
                raise TemplateError(f"template: :{line}: {{{{{kw}}}}} is not supported by soko's templates")
            nodes.append(Action(self._pipeline(toks, line)))
        return nodes, None

    def _branch(self, kw: str, toks: list[Tok], line: int) -> Branch:
        pipe = self._pipeline(toks, line, decl_ok=True)
        if not pipe.cmds:
            raise TemplateError(f"template: :{line}: missing value for {kw}")
        body, stop = self._list()
        if stop is None:
            raise TemplateError(f"template: :{line}: unexpected EOF")
        orelse: list[Node] = []
        if stop[0] == "else":
            rest = self._else_toks
            if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with") and kw in ("if", "with"):
                # `else if ...`: a nested branch sharing our `end`
                orelse = [self._branch(rest[0].value, rest[1:], stop[1])]
                return Branch(kw, pipe, body, orelse)
            if rest:
                raise TemplateError(f"template: :{stop[1]}: unexpected {rest[0].value} in else")
            orelse, stop2 = self._list()
            if stop2 is None:
                raise TemplateError(f"template: :{line}: unexpected EOF")
            if stop2[0] != "end":
                raise TemplateError(f"template: :{stop2[1]}: expected end; found {{{{else}}}}")
        return Branch(kw, pipe, body, orelse)

    def _pipeline(self, toks: list[Tok], line: int, decl_ok: bool = True) -> Pipeline:
        pipe = Pipeline(line=line)
        i = 0
        # `$x :=`, `$x =`, `$i, $e :=`
        if len(toks) >= 2 and toks[0].kind == "var":
            if toks[1].kind in ("declare", "assign"):
                pipe.decl, pipe.assign, i = [toks[0].value], toks[1].kind == "assign", 2
            elif toks[1].kind == "comma" and len(toks) >= 4 and toks[2].kind == "var" and toks[3].kind == "declare":
                pipe.decl, i = [toks[0].value, toks[2].value], 4
        rest = toks[i:]
        if not rest:
            raise TemplateError(f"template: :{line}: missing value for command")
        for part in self._split_pipes(rest, line):
            pipe.cmds.append(self._command(part, line))
        return pipe

    @staticmethod
    def _split_pipes(toks: list[Tok], line: int) -> list[list[Tok]]:
        parts: list[list[Tok]] = [[]]
        depth = 0
        for t in toks:
            if t.kind == "lparen":
                depth += 1
            elif t.kind == "rparen":
                depth -= 1
                if depth < 0:
                    raise TemplateError(f"template: :{line}: unexpected right paren")
            if t.kind == "pipe" and depth == 0:
                parts.append([])
            else:
                parts[-1].append(t)
        if depth:
            raise TemplateError(f"template: :{line}: unclosed left paren")
        if any(not p for p in parts):
            raise TemplateError(f"template: :{line}: missing command")
        return parts

    def _command(self, toks: list[Tok], line: int) -> Command:
        args: list[Any] = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.kind == "lparen":
                depth, j = 1, i + 1
                while depth:
                    depth += {"lparen": 1, "rparen": -1}.get(toks[j].kind, 0)
                    j += 1
                inner = self._pipeline(toks[i + 1:j - 1], line)
                arg: Any = inner
                i = j
                if i < len(toks) and toks[i].kind == "chain":
                    arg = ("chain", inner, toks[i].value)
                    i += 1
                args.append(arg)
                continue
            if t.kind == "var" and i + 1 < len(toks) and toks[i + 1].kind == "chain":
                args.append(("chain", t, toks[i + 1].value))
                i += 2
                continue
            if t.kind == "ident":
                if t.value in _KEYWORDS:
                    raise TemplateError(f"template: :{line}: unexpected <{t.value}> in command")
                if t.value not in self.funcs:
                    raise TemplateError(f'template: :{line}: function "{t.value}" not defined')
            if t.kind in ("declare", "assign", "comma", "rparen", "chain"):
                raise TemplateError(f"template: :{line}: unexpected {t.value!r} in command")
            args.append(t)
            i += 1
        return Command(args)
