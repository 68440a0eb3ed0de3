"""`soko images`: the rows Docker lists, with its filters.

`--filter` takes Docker's keys: `dangling=true|false`, `reference=PATTERN` (Go's path.Match
globs over `name` and `name:tag`), `label=KEY` or `label=KEY=VALUE`, `before=IMAGE`,
`since=IMAGE`. Values of one key are alternatives; different keys must all hold. A positional
`REPO[:TAG]` is a reference filter, as `docker images busybox` is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SokoError
from .formatter import FormatRow
from .image_views import image_row
from .render import parse_time, unix_seconds

FILTER_KEYS = ("dangling", "reference", "label", "before", "since")


@dataclass
class Filters:
    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: tuple[str, ...] | list[str]) -> "Filters":
        out = cls()
        for item in items:
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if key not in FILTER_KEYS:
                raise SokoError(f"Invalid filter '{key}'")
            if not eq:
                raise SokoError(f"bad format of filter (expected name=value): {item}")
            if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
                raise SokoError(f"Invalid filter 'dangling=[{value}]'")
            out.values.setdefault(key, []).append(value)
        return out

    def get(self, key: str) -> list[str]:
        return self.values.get(key, [])


def go_path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` stop at `/`, `[...]` classes (`^` negates)."""
    rx, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            rx += "[^/]*"
        elif ch == "?":
            rx += "[^/]"
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise SokoError(f"invalid reference filter {pattern!r}: syntax error in pattern")
            body = pattern[i + 1:j]
            if body.startswith("^"):
                body = "^" + body[1:]
            rx += "[" + body.replace("\\", "\\\\") + "]"
            i = j
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            rx += re.escape(pattern[i])
        else:
            rx += re.escape(ch)
        i += 1
    return re.fullmatch(rx, name) is not None


def _reference_matches(patterns: list[str], repository: str, tag: str) -> bool:
    if not patterns:
        return True
    if repository == "<none>":
        return False
    for p in patterns:
        if go_path_match(p, repository) or (tag != "<none>" and go_path_match(p, f"{repository}:{tag}")):
            return True
    return False


def labels_match(wanted: list[str], labels: dict) -> bool:
    """Docker's label filter: every `KEY` present, every `KEY=VALUE` equal."""
    for w in wanted:
        key, eq, value = w.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def image_rows(store, filters: Filters, no_trunc: bool) -> list[FormatRow]:
    """One row per tag of each image (and per repo digest of an untagged one), newest first."""
    from storage import image_facts as facts
    from storage.errors import StorageError

    entries = store.list()
    dangling = filters.get("dangling")
    want_dangling = None if not dangling else dangling[-1].lower() in ("true", "1")
    bounds = {key: [_created_of(store, ref) for ref in filters.get(key)] for key in ("before", "since")}
    cache: dict[str, tuple[int, dict, list[str]]] = {}
    rows: list[tuple[int, int, FormatRow]] = []
    for n, e in enumerate(entries):
        if e.image_id not in cache:
            try:
                img = store.image(e.manifest_digest)
                labels = ((img.config.data.get("config") or {}).get("Labels")) or {}
                usage = facts.image_size(store, img)
            except StorageError:  # an index without this machine's platform
                labels, usage = {}, e.size
            cache[e.image_id] = (usage, labels, facts.repo_digests(store, e.image_id))
        size, labels, repo_digests = cache[e.image_id]
        tagged = e.repository != "<none>"
        if want_dangling is not None and want_dangling == (tagged or bool(repo_digests)):
            continue
        if filters.get("label") and not labels_match(filters.get("label"), labels):
            continue
        exact = precise_time(e.created)
        if any(exact >= b for b in bounds["before"]) or any(exact <= b for b in bounds["since"]):
            continue
        created = unix_seconds(e.created) or 0
        if tagged:
            pairs = [(e.repository, e.tag, _digest_for(e.repository, repo_digests))]
        elif repo_digests:
            pairs = [(rd.split("@")[0], "<none>", rd.split("@")[1]) for rd in repo_digests]
        else:
            pairs = [("<none>", "<none>", "<none>")]
        for repo, tag, digest in pairs:
            if not _reference_matches(filters.get("reference"), repo, tag):
                continue
            rows.append((-created, n, image_row(repo, tag, digest, e.image_id, e.created, size, no_trunc)))
    return [r for _, _, r in sorted(rows, key=lambda r: (r[0], r[1]))]


def _digest_for(repository: str, repo_digests: list[str]) -> str:
    for rd in repo_digests:
        name, _, digest = rd.partition("@")
        if name == repository:
            return digest
    return "<none>"


def _created_of(store, ref: str) -> tuple[int, int]:
    return precise_time(store.resolve(ref).config.data.get("created"))


def precise_time(text: str | None) -> tuple[int, int]:
    """(seconds, nanoseconds): before/since compare as Go's time.After does, to the nanosecond."""
    parsed = parse_time(text)
    return (int(parsed[0].timestamp()), parsed[1]) if parsed else (0, 0)
