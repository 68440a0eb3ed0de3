"""Reading a TOML config file into typed dataclasses, with errors that name
the file, the line and the key.

tomllib checks the syntax (its errors carry a line) but gives no positions
for keys, so `key_lines` scans the text once more for where each key, table
and array element starts. The builder is generic over dataclasses: a field's
type hint says what the file may hold there, so a new section is a new
dataclass field, nothing more. Durations (`Annotated[float, DURATION]`) take
seconds or Go-style strings ("1h30m", "500ms"), as distribution's config does.
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Annotated, Callable, Iterable, Iterator

from ..errors import ConfigError

Key = tuple[str | int, ...]  # ("access", 0, "repository"); ints index arrays
DURATION = "duration"  # marker for Annotated[float, DURATION]
Duration = Annotated[float, DURATION]
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[^,\]}\n#]*")


class ConfigProblem(Exception):
    """One bad value: where (a key path) and what is wrong. The loader turns
    it into a ConfigError naming the file and line."""

    def __init__(self, key: Key, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def show_key(key: Key) -> str:
    """`access[2].repository` (arrays counted from 1, as a person counts tables), `robots."robot$ci".secret`."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + name
    return out or "(top level)"


def parse_duration(value: Any, key: Key) -> float:
    """Seconds from a number or a string such as "24h", "1m30s", "250ms"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigProblem(key, f"expected a duration (seconds or a string such as \"5m\"), got {_kind(value)}")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        value = float(value)  # a flag's plain number: seconds
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ConfigProblem(key, f"invalid duration {value!r} (want e.g. 30s, 5m, 24h, 1h30m)")
        value = total
    if value < 0:
        raise ConfigProblem(key, "a duration cannot be negative")
    return float(value)


_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (dict, "a table"),
          (list, "an array"), ((datetime.datetime, datetime.date, datetime.time), "a date/time"))


def _kind(value: Any) -> str:
    """What a TOML value is, in the words of an error message."""
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


# -- building dataclasses from parsed TOML -------------------------------------------------
def build(cls: type, data: Any, key: Key = ()) -> Any:
    """An instance of dataclass `cls` from `data` (a dict), checked against the field types."""
    if not isinstance(data, dict):
        raise ConfigProblem(key, f"expected a table, got {_kind(data)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    for name in data:
        if name not in known:
            raise ConfigProblem((*key, name), f"unknown key {name!r}" + _suggest(name, known))
    kwargs = {name: convert(hints[name], value, (*key, name)) for name, value in data.items()}
    return cls(**kwargs)


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def convert(hint: Any, value: Any, key: Key) -> Any:
    """`value` as type `hint` (the subset of types config dataclasses use)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        if DURATION in extras:
            return parse_duration(value, key)
        return convert(base, value, key)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return convert(args[0], value, key)
        raise TypeError(f"unsupported union {hint}")  # a programming error, not a config one
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigProblem(key, f"expected an array, got {_kind(value)}")
        return [convert(item, v, (*key, i)) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigProblem(key, f"expected a table, got {_kind(value)}")
        return {k: convert(item, v, (*key, k)) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigProblem(key, f"expected true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigProblem(key, f"expected an integer, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigProblem(key, f"expected a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigProblem(key, f"expected a string, got {_kind(value)}")
        return value
    if hint is datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        if isinstance(value, datetime.date):
            return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
        raise ConfigProblem(key, f"expected a date or date-time (e.g. 2027-01-01T00:00:00Z), got {_kind(value)}")
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint}")


def merge(data: dict, overrides: dict) -> dict:
    """`overrides` (flags: nested dicts, None = not given) laid over `data`."""
    out = dict(data)
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        elif isinstance(v, dict):
            out[k] = {kk: vv for kk, vv in v.items() if vv is not None}
        else:
            out[k] = v
    return out


def flat_keys(overrides: dict, prefix: Key = ()) -> set[Key]:
    out: set[Key] = set()
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out |= flat_keys(v, (*prefix, k))
        else:
            out.add((*prefix, k))
    return out


# -- reading a file ------------------------------------------------------------------------
def load(path: str | Path | None, cls: type, overrides: dict | None = None,
         check: Callable[[Any], None] | None = None, defaults: dict | None = None) -> Any:
    """Parse the TOML file at `path` (None: no file), lay it over `defaults` and
    `overrides` over it, build `cls` and run `check` on it; every problem is a
    ConfigError "FILE:LINE: KEY: what" (or "KEY (from the command line): what")."""
    overrides = overrides or {}
    if path is None:
        return _built(None, "", {}, cls, overrides, check, defaults)
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {_toml_error(e)}") from None
    return _built(path, text, data, cls, overrides, check, defaults)


def _built(path: Path | None, text: str, data: dict, cls: type, overrides: dict,
           check: Callable[[Any], None] | None, defaults: dict | None) -> Any:
    try:
        cfg = build(cls, merge(merge(defaults or {}, data), overrides))
        if check is not None:
            check(cfg)
    except ConfigProblem as p:
        raise ConfigError(locate(path, text, p, flat_keys(overrides))) from None
    return cfg


def locate(path: Path | None, text: str, p: ConfigProblem, from_flags: set[Key] = frozenset()) -> str:
    """The one-line message for a problem: file and line of its key (or of the
    nearest enclosing table when the key itself is missing)."""
    if any(p.key[:len(k)] == k for k in from_flags):
        return f"{show_key(p.key)} (from the command line): {p.message}"
    if path is None:
        return f"config: {show_key(p.key)}: {p.message}"
    lines = key_lines(text)
    for n in range(len(p.key), -1, -1):
        line = lines.get(p.key[:n])
        if line is not None:
            return f"{path}:{line}: {show_key(p.key)}: {p.message}"
    return f"{path}: {show_key(p.key)}: {p.message}"


def _toml_error(e: tomllib.TOMLDecodeError) -> str:
    """tomllib says "Invalid value (at line 3, column 7)": put the line first, as the other errors do."""
    m = re.search(r"\(at line (\d+), column (\d+)\)$", str(e))
    if m:
        return f"line {m.group(1)}: {str(e)[:m.start()].strip()} (column {m.group(2)})"
    return str(e)


# -- where keys are: a scanner for (valid) TOML ------------------------------------------------
def key_lines(text: str) -> dict[Key, int]:
    """Key path -> line number (1-based) of every table header, key and array
    element in a TOML document that tomllib accepted."""
    return _Scanner(text).run()


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.out: dict[Key, int] = {}
        self.arrays: dict[Key, int] = {}  # array-of-tables path (resolved) -> elements so far

    def line(self, pos: int | None = None) -> int:
        return bisect.bisect_left(self.newlines, self.i if pos is None else pos) + 1

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def skip_blank(self, newlines: bool) -> None:
        """Spaces, tabs, comments and (if asked) newlines."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def run(self) -> dict[Key, int]:
        table: Key = ()
        while True:
            self.skip_blank(True)
            if self.i >= len(self.s):
                return self.out
            start = self.i
            if self.peek(2) == "[[":
                self.i += 2
                names = self.key()
                self.skip_blank(False)
                self.i += 2  # ]]
                base = self.resolve(names[:-1]) + (names[-1],)
                index = self.arrays.get(base, 0)
                self.arrays[base] = index + 1
                self.out.setdefault(base, self.line(start))
                table = (*base, index)
                self.out[table] = self.line(start)
            elif self.peek() == "[":
                self.i += 1
                names = self.key()
                self.skip_blank(False)
                self.i += 1  # ]
                table = self.resolve(names)
                self.out.setdefault(table, self.line(start))
            else:
                self.assignment(table)

    def resolve(self, names: tuple[str, ...]) -> Key:
        """A header's names, with each array of tables replaced by its last element."""
        path: Key = ()
        for name in names:
            path = (*path, name)
            if path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        return path

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip_blank(False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                m = _BARE_KEY.match(self.s, self.i)
                parts.append(m.group(0) if m else "")
                self.i = m.end() if m else self.i + 1
            self.skip_blank(False)
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def string(self) -> str:
        s = self.s
        q = s[self.i]
        if s.startswith(q * 3, self.i):
            end = s.find(q * 3, self.i + 3)
            while q == '"' and end > 0 and _escaped(s, end):
                end = s.find(q * 3, end + 1)
            while s.startswith(q, end + 3):  # up to two quotes may close the content
                end += 1
            raw = s[self.i + 3:end]
            self.i = end + 3
            return raw
        j = self.i + 1
        while j < len(s) and s[j] != q:
            j += 2 if (q == '"' and s[j] == "\\") else 1
        raw = s[self.i + 1:j]
        self.i = j + 1
        if q == '"':
            try:
                return tomllib.loads(f'x = "{raw}"')["x"]
            except tomllib.TOMLDecodeError:
                return raw
        return raw

    def assignment(self, table: Key) -> None:
        """`key = value` (dotted keys too), recorded under `table`."""
        start = self.i
        path = (*table, *self.key())
        self.out.setdefault(path, self.line(start))
        self.skip_blank(False)
        self.i += 1  # =
        self.value(path)

    def items(self, close: str) -> Iterator[int]:
        """Step through a bracketed value, yielding each element's index at its start."""
        self.i += 1
        index = 0
        while True:
            self.skip_blank(True)
            if self.peek() == close:
                self.i += 1
                return
            if self.peek() == ",":
                self.i += 1
                continue
            yield index
            index += 1

    def value(self, path: Key) -> None:
        self.skip_blank(False)
        c = self.peek()
        if c in ('"', "'"):
            self.string()
        elif c == "{":
            for _ in self.items("}"):
                self.assignment(path)
        elif c == "[":
            for index in self.items("]"):
                self.out.setdefault((*path, index), self.line())
                self.value((*path, index))
        else:  # number, boolean, date/time: up to the next delimiter
            self.i = _SCALAR_END.match(self.s, self.i).end()


def _escaped(s: str, pos: int) -> bool:
    n = 0
    while pos - 1 - n >= 0 and s[pos - 1 - n] == "\\":
        n += 1
    return n % 2 == 1
