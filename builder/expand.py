"""Variable expansion with the Dockerfile reference's rules.

`$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?m}`, `${v?m}`,
`${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`; the escape
character (`\\` or the `# escape=` one) makes the next character literal;
single quotes are literal, double quotes allow `$` and escape only `"`, `$`
and the escape character. A processed word has its quotes removed but is not
split: `ENV X="a b"` then `COPY $X /d` names one source, `a b`.

Heredoc bodies follow here-document rules instead: quotes stay, a backslash
escapes only `$`, `` ` ``, `\\` and a newline.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from .errors import ExpansionError

_SPECIAL = set("@*#?-$!0")


@dataclass
class Expansion:
    """A word after variable expansion, and which variables it read (for unused-ARG warnings)."""
    value: str
    used: set[str] = field(default_factory=set)  # variable names looked up (set or not)


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch


class Lexer:
    """Expands words against a variable mapping; one instance per escape character."""

    def __init__(self, escape: str = "\\"):
        if escape not in ("\\", "`"):
            raise ExpansionError(f"invalid escape character {escape!r}")
        self.escape = escape

    # -- public ---------------------------------------------------------------
    def word(self, text: str, env: Mapping[str, str]) -> str:
        return self.expand(text, env).value

    def expand(self, text: str, env: Mapping[str, str]) -> Expansion:
        """Quote removal plus expansion of one word (no splitting)."""
        run = _Run(self, text, env)
        return Expansion(run.stop_on(""), run.used)

    def words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """Expand each whitespace-separated word (the list form of COPY, VOLUME...)."""
        return [self.word(w, env) for w in text.split()]

    def heredoc(self, text: str, env: Mapping[str, str]) -> Expansion:
        """Here-document expansion: `$` forms expand, quotes are kept."""
        run = _Run(self, text, env, heredoc=True)
        return Expansion(run.stop_on(""), run.used)


class _Run:
    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str], heredoc: bool = False):
        self.s = _Scanner(text)
        self.esc = lexer.escape
        self.env = env
        self.heredoc = heredoc
        self.used: set[str] = set()

    def lookup(self, name: str) -> str | None:
        self.used.add(name)
        return self.env.get(name)

    def stop_on(self, stop: str, raw_escapes: bool = False) -> str:
        out: list[str] = []
        s = self.s
        while s.peek():
            ch = s.peek()
            if stop and ch == stop:
                s.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
            elif ch == "'" and not self.heredoc:
                out.append(self.single_quote())
            elif ch == '"' and not self.heredoc:
                out.append(self.double_quote())
            else:
                s.next()
                if ch == self.esc:
                    nxt = s.peek()
                    if self.heredoc:
                        if nxt in ("$", "`", self.esc, "\n"):
                            s.next()
                            if nxt != "\n":
                                out.append(nxt)
                        else:
                            out.append(ch)
                        continue
                    if raw_escapes:
                        out.append(ch)
                    if not nxt:
                        break
                    out.append(s.next())
                else:
                    out.append(ch)
        if stop:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def single_quote(self) -> str:
        s = self.s
        s.next()
        out: list[str] = []
        while True:
            ch = s.next()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        s = self.s
        s.next()
        out: list[str] = []
        while True:
            ch = s.peek()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                s.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            s.next()
            if ch == self.esc:
                nxt = s.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.esc):
                    ch = s.next()
            out.append(ch)

    def name(self) -> str:
        s = self.s
        ch = s.peek()
        if ch.isdigit():
            out = []
            while s.peek().isdigit():
                out.append(s.next())
            return "".join(out)
        if ch in _SPECIAL:
            return s.next()
        out = []
        while s.peek() and (s.peek().isalnum() or s.peek() == "_"):
            out.append(s.next())
        return "".join(out)

    def dollar(self) -> str:
        s = self.s
        s.next()  # $
        if s.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.lookup(name) or ""
        s.next()  # {
        if not s.peek():
            raise ExpansionError("syntax error: missing '}'")
        if s.peek() in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        if not name:
            raise ExpansionError("syntax error: bad substitution")
        op = s.next()
        if op == "}":
            return self.lookup(name) or ""
        colon = False
        if op == ":":
            colon = True
            op = s.next()
            if op not in ("-", "+", "?"):
                raise ExpansionError(f"unsupported modifier (:{op}) in substitution")
        if op in ("-", "+", "?", "#", "%"):
            word = self._until("}", raw=op in "#%")
            value = self.lookup(name)
            is_set = value is not None
            empty = colon and not value
            if op == "-":
                return word if (not is_set or empty) else value  # type: ignore[return-value]
            if op == "+":
                return "" if (not is_set or empty) else word
            if op == "?":
                if not is_set:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
                if empty:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
                return value  # type: ignore[return-value]
            greedy = word.startswith(op)
            if greedy:
                word = word[1:]
            return _trim(value or "", word, suffix=op == "%", greedy=greedy)
        if op == "/":
            replace_all = s.peek() == "/"
            if replace_all:
                s.next()
            pattern = self._until("/", raw=True, missing="syntax error: missing '/' in ${}")
            replacement = self._until("}", raw=True)
            value = self.lookup(name) or ""
            rx = _glob_regex(pattern)
            if replace_all:
                return rx.sub(lambda m: replacement, value) if pattern else value
            m = rx.search(value)
            return value[:m.start()] + replacement + value[m.end():] if m and pattern else value
        if not op:
            raise ExpansionError("syntax error: missing '}'")
        raise ExpansionError(f"unsupported modifier ({op}) in substitution")

    def _until(self, stop: str, raw: bool = False, missing: str = "syntax error: missing '}'") -> str:
        try:
            return self.stop_on(stop, raw_escapes=raw)
        except ExpansionError:
            if not self.s.peek():
                raise ExpansionError(missing) from None
            raise


def _glob_regex(pattern: str, anchor: str = "") -> re.Pattern:
    """A shell pattern (`*`, `?`, `\\x` literal) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    body = "".join(out)
    return re.compile(anchor.replace("X", body) if anchor else body, re.S)


def _trim(value: str, pattern: str, suffix: bool, greedy: bool) -> str:
    """`${v#p}` / `${v##p}` (prefix) and `${v%p}` / `${v%%p}` (suffix)."""
    full = _glob_regex(pattern, "^(?:X)$")
    cuts = range(len(value) + 1)
    if not suffix:
        order = reversed(cuts) if greedy else cuts
        for i in order:
            if full.match(value[:i]):
                return value[i:]
        return value
    order = cuts if greedy else reversed(cuts)
    for i in order:
        if full.match(value[i:]):
            return value[:i]
    return value


def split_raw_words(text: str, escape: str = "\\") -> list[str]:
    """Shell-style split on unquoted white space, keeping quotes and escapes
    (how heredoc markers like `<<"EOF"` are found on an instruction line)."""
    words: list[str] = []
    cur: list[str] = []
    have = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            elif ch == escape and quote == '"' and i + 1 < len(text):
                i += 1
                cur.append(text[i])
        elif ch.isspace():
            if have:
                words.append("".join(cur))
                cur, have = [], False
        else:
            have = True
            cur.append(ch)
            if ch in ("'", '"'):
                quote = ch
            elif ch == escape and i + 1 < len(text):
                i += 1
                cur.append(text[i])
        i += 1
    if have:
        words.append("".join(cur))
    return words
