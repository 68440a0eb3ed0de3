"""Dockerfile text -> instructions: dockerfile-parse, plus what it lacks.

dockerfile-parse (2.0) splits the file into instructions with line numbers,
handles continuations, comments inside continuations and the escape
directive. On top of it this module adds:

- parser directives as BuildKit reads them (`syntax`, `escape`, `check`;
  a repeated one is an error);
- empty and blank continuation lines, which BuildKit skips but
  dockerfile-parse treats as the end of the instruction;
- heredocs (`RUN <<EOF`, `COPY <<-"EOT" /f`): dockerfile-parse reads their
  bodies as instructions of their own; here the body lines are collected and
  the bogus entries dropped by line range;
- instruction flags (`--from=`, `--chown=` ...) split off the arguments with
  BuildKit's quoting rules (dockerfile-parse leaves them in the value).
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser

from .errors import DockerfileError
from .expand import split_raw_words

# Instructions whose flags are split off (the others keep `--x` as text).
FLAGGED = {"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"}
HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
_DIRECTIVE_RE = re.compile(r"^\s*#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_KNOWN_DIRECTIVES = {"syntax", "escape", "check"}
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")


@dataclass
class Heredoc:
    """One `<<NAME` body of an instruction, as written."""
    name: str
    content: str      # body lines, each ending in "\n"
    expand: bool      # the delimiter was not quoted: expand variables in the body
    chomp: bool       # `<<-`: strip leading tabs
    fd: int = 0

    def text(self) -> str:
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


@dataclass
class Flag:
    """One `--name[=value]` before an instruction's arguments."""
    name: str
    value: str | None  # None for a bare boolean flag (`--link`)


@dataclass
class Instruction:
    """One Dockerfile instruction as parsed: keyword, flags, arguments, where it is."""
    cmd: str                     # upper-case keyword
    args: str                    # the arguments after any flags, continuations joined
    line: int                    # first line, 1-based
    end_line: int
    flags: list[Flag] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    raw_args: str = ""           # the arguments as written, flags included

    @property
    def original(self) -> str:
        """The instruction as one line, the way error messages and ONBUILD quote it."""
        return f"{self.cmd} {self.raw_args}".rstrip()

    def json_args(self) -> list[str] | None:
        """The exec (JSON array) form's strings, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None

    def error(self, message: str, filename: str = "Dockerfile") -> DockerfileError:
        return DockerfileError(message, self.line, filename)


@dataclass
class Dockerfile:
    """A parsed Dockerfile: its instructions and the parser directives that apply."""
    instructions: list[Instruction]
    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None
    filename: str = "Dockerfile"
    notices: list[str] = field(default_factory=list)


def parse(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile; DockerfileError names the line of a bad construct."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DockerfileError(f"not valid UTF-8 ({e.reason} at byte {e.start})", None, filename) from None
    text = text.removeprefix("\ufeff")
    if text and not text.endswith("\n"):
        text += "\n"  # dockerfile-parse drops a last line without newline if it is a bare keyword
    directives = _directives(text, filename)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token {escape!r} does not match ` or \\", 1, filename)
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    lines = parser.lines
    entries = parser.structure
    df = Dockerfile([], escape, directives.get("syntax"), directives.get("check"), filename)
    if df.syntax is not None:
        df.notices.append(f"syntax directive {df.syntax!r} ignored: soko has its own Dockerfile frontend")
    i = 0
    skip_until = -1
    while i < len(entries):
        e = entries[i]
        i += 1
        if e["startline"] <= skip_until or e["instruction"] == "COMMENT":
            continue
        value = e["value"]
        end = e["endline"]
        # A blank line inside a continuation ends the entry in dockerfile-parse; BuildKit skips it.
        while end > e["startline"] and not lines[end].strip() and i < len(entries):
            nxt = entries[i]
            i += 1
            if nxt["instruction"] == "COMMENT":
                continue
            value += _joined(nxt["content"], escape)
            end = nxt["endline"]
        cmd = e["instruction"].upper()
        inst = _instruction(cmd, value.strip(), e["startline"] + 1, end + 1, escape, filename)
        if cmd in HEREDOC_INSTRUCTIONS:
            markers = _heredoc_markers(inst.args, escape, inst.line, filename)
            pos = end + 1
            for name, expand, chomp, fd in markers:
                body: list[str] = []
                while True:
                    if pos >= len(lines):
                        raise DockerfileError(f"unterminated heredoc {name!r}", inst.line, filename)
                    raw = lines[pos]
                    pos += 1
                    candidate = raw.rstrip("\r\n")
                    if chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == name:
                        break
                    body.append(raw.rstrip("\r\n") + "\n")
                inst.heredocs.append(Heredoc(name, "".join(body), expand, chomp, fd))
            if markers:
                skip_until = pos - 1
                inst.end_line = pos
        df.instructions.append(inst)
    return df


def parse_line(text: str, line: int, escape: str = "\\", filename: str = "Dockerfile") -> Instruction:
    """One instruction from one line of text (ONBUILD triggers, stored in image configs)."""
    m = re.match(r"^\s*(\S+)(?:\s+(.*))?$", text, re.S)
    if not m:
        raise DockerfileError("empty instruction", line, filename)
    return _instruction(m.group(1).upper(), (m.group(2) or "").strip(), line, line, escape, filename)


def _instruction(cmd: str, value: str, line: int, end: int, escape: str, filename: str) -> Instruction:
    inst = Instruction(cmd, value, line, end, raw_args=value)
    if cmd in FLAGGED:
        rest, words = extract_flags(value, escape)
        inst.args = rest.strip()
        for w in words:
            body = w[2:]
            if not body:
                raise DockerfileError(f"empty flag name in {w!r}", line, filename)
            name, eq, val = body.partition("=")
            inst.flags.append(Flag(name.lower(), val if eq else None))
    return inst


def _joined(content: str, escape: str) -> str:
    """The value dockerfile-parse would have made of continuation lines."""
    out = []
    for raw in content.splitlines():
        text = raw.rstrip()
        out.append(text[:-1] if text.endswith(escape) else text)
    return "".join(out)


def _directives(text: str, filename: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _DIRECTIVE_RE.match(line)
        if not m or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        key = m.group(1).lower()
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", n, filename)
        found[key] = m.group(2)
    return found


def extract_flags(line: str, escape: str = "\\") -> tuple[str, list[str]]:
    """Split leading `--flag[=value]` words off `line` (BuildKit's rules: quotes
    and escapes inside a flag word are processed, a bare `--` ends the flags)."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        quote = ""
        blank_ok = False
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape and pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
                elif ch != escape:
                    word.append(ch)
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
            elif ch == escape:
                if pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return line[pos:].lstrip(), words
        if text or blank_ok:
            words.append(text)


def _heredoc_markers(args: str, escape: str, line: int, filename: str) -> list[tuple[str, bool, bool, int]]:
    """(name, expand, chomp, fd) for each `<<NAME` word of an instruction."""
    out = []
    for word in split_raw_words(args, escape):
        m = _HEREDOC_RE.match(word)
        if not m or not m.group(3):
            continue
        fd = int(m.group(1) or 0)
        chomp = m.group(2) == "-"
        rest = m.group(3)
        name = _unquote(rest, escape)
        if name is None or not name:
            raise DockerfileError(f"invalid heredoc delimiter {rest!r}", line, filename)
        expand = name == rest.replace(escape, "") and "'" not in rest and '"' not in rest
        out.append((name, expand, chomp, fd))
    return out


def _unquote(word: str, escape: str) -> str | None:
    """Quote removal on a heredoc delimiter word (`"EOF"`, `'EOF'`, `E"O"F`)."""
    out = []
    quote = ""
    i = 0
    while i < len(word):
        ch = word[i]
        if quote:
            if ch == quote:
                quote = ""
            else:
                out.append(ch)
        elif ch in ("'", '"'):
            quote = ch
        elif ch == escape and i + 1 < len(word):
            i += 1
            out.append(word[i])
        elif ch.isspace():
            return None
        else:
            out.append(ch)
        i += 1
    return None if quote else "".join(out)
