""".dockerignore with Docker's semantics.

Reading: `#` at the start of a line is a comment; lines are trimmed; `!`
marks an exception; each pattern is cleaned like Go's filepath.Clean (so
`./a//b/` is `a/b`) and a leading `/` is dropped (patterns are relative to
the context root either way).

Matching (moby/patternmatcher): patterns are tried in order and the last
one that matches decides; a pattern matches a path or any of its parent
directories. `*` and `?` stay within one path component, `[...]` is a
character class, `\\` escapes, and `**` matches any number of directories,
zero included (`**/x`, `a/**/b`, `a/**`). Literal prefixes and suffixes
around a single `**` match as Docker matches them (`**.txt` matches
`a/b.txt`).

Walking: an excluded directory is entered only when some exception pattern
starts with that directory's path, so `!dir/keep` can bring back one file
of an excluded `dir` (whose parents are then included as well).
"""
from __future__ import annotations

import posixpath
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ContextError

_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned, `!` kept in front of exceptions."""
    out: list[str] = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def _clean(path: str) -> str:
    """Go's filepath.Clean for '/' paths."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


@dataclass
class Pattern:
    """One .dockerignore line, compiled."""

    text: str
    exclusion: bool
    kind: int
    regex: re.Pattern | None

    @classmethod
    def compile(cls, raw: str) -> "Pattern":
        exclusion = raw.startswith("!")
        text = raw[1:] if exclusion else raw
        if not text:
            raise ContextError("illegal exclusion pattern: \"!\"")
        text = _clean(text)
        kind = _EXACT
        rx: list[str] = ["^"]
        i = 0
        n = len(text)
        first = True
        in_class = False
        while i < n:
            ch = text[i]
            i += 1
            if in_class and ch not in "]\\":
                rx.append(ch if ch in "-^" else re.escape(ch))
                first = False
                continue
            if ch == "*":
                if i < n and text[i] == "*":
                    i += 1
                    if i < n and text[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == _EXACT:
                            kind = _PREFIX
                        else:
                            rx.append(".*")
                            kind = _REGEX
                    else:
                        rx.append("(.*/)?")
                        kind = _REGEX
                    if first:
                        kind = _SUFFIX
                else:
                    rx.append("[^/]*")
                    kind = _REGEX
            elif ch == "?":
                rx.append("[^/]")
                kind = _REGEX
            elif ch == "\\":
                if i < n:
                    rx.append(re.escape(text[i]))
                    i += 1
                    kind = _REGEX
                else:
                    rx.append(r"\\")
            elif ch in "[]":
                rx.append(ch)
                in_class = ch == "["
                kind = _REGEX
            else:
                rx.append(re.escape(ch))
            first = False
        regex = None
        if kind == _REGEX:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    regex = re.compile("".join(rx) + "$", re.S)
            except re.error as e:
                raise ContextError(f"invalid .dockerignore pattern {raw!r}: {e}") from None
        return cls(text, exclusion, kind, regex)

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


class Matcher:
    """Decides which context paths (relative, '/'-separated) are excluded."""

    def __init__(self, patterns: list[str]):
        self.patterns = [Pattern.compile(p) for p in patterns]
        self.exceptions = [p for p in self.patterns if p.exclusion]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        matched = False
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        for p in self.patterns:
            if p.exclusion != matched:
                continue
            hit = p.match(path)
            if not hit and parents:
                for i in range(1, len(parents) + 1):
                    if p.match("/".join(parents[:i])):
                        hit = True
                        break
            if hit:
                matched = not p.exclusion
        return matched

    def may_include_under(self, directory: str) -> bool:
        """Whether an excluded directory must still be walked for exceptions."""
        prefix = directory + "/"
        return any((p.text + "/").startswith(prefix) for p in self.exceptions)


def candidates(context: Path, dockerfile: Path | None = None) -> list[Path]:
    """The ignore files a build may read, the first present one wins:
    `<Dockerfile>.dockerignore` next to the Dockerfile, then `<context>/.dockerignore`."""
    own = [dockerfile.with_name(dockerfile.name + ".dockerignore")] if dockerfile is not None else []
    return [*own, context / ".dockerignore"]


def load(context: Path, dockerfile: Path | None = None) -> Matcher:
    """The matcher for a build (from the first of `candidates` present)."""
    for c in candidates(context, dockerfile):
        try:
            text = c.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ContextError(f"cannot read {c}: {e}") from None
        return Matcher(read_patterns(text))
    return Matcher([])
