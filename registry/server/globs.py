"""Globs over repository names and tags, as zot and Harbor write them.

`*` matches within one path component (`team/*` is `team/app`, not
`team/app/sub`), `**` matches across components (`team/**` is everything under
team/), `?` is one character other than `/`, `[abc]`/`[a-z]`/`[!x]` one
character of a class. Anything else matches itself.
"""
from __future__ import annotations

import re
from functools import lru_cache


class GlobError(ValueError):
    pass


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of `pattern` (GlobError when it is malformed)."""
    if not pattern:
        raise GlobError("empty pattern")
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # `a/**/b` also matches `a/b`
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end < 0:
                raise GlobError(f"unclosed '[' at position {i + 1}")
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise GlobError(f"empty character class at position {i + 1}")
            if "/" in body:
                raise GlobError("a character class cannot hold '/'")
            out.append(("[^/" if negate else "[") + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "]":
            raise GlobError(f"unmatched ']' at position {i + 1}")
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as e:  # e.g. a reversed range [z-a]
        raise GlobError(str(e)) from None


def matches(pattern: str, name: str) -> bool:
    return compile_glob(pattern).match(name) is not None
