"""Writing the TOML the registry's config tests need (tomllib only reads):
scalars, arrays, tables, arrays of tables, dates."""
from __future__ import annotations

import datetime
import json
import re
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps(data: dict, prefix: tuple[str, ...] = ()) -> str:
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, dict) or _is_table_array(v):
            tables.append((k, v))
        else:
            lines.append(f"{key(k)} = {value(v)}")
    for k, v in tables:
        path = (*prefix, k)
        name = ".".join(key(p) for p in path)
        if isinstance(v, dict):
            lines += ["", f"[{name}]", dumps(v, path)]
        else:
            for item in v:
                lines += ["", f"[[{name}]]", dumps(item, path)]
    return "\n".join(x for x in lines if x is not None).strip("\n") + "\n"
