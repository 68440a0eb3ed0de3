"""Plain-text rendering shared by the commands: tables, sizes, ages."""
from __future__ import annotations

import datetime as _dt
from typing import Sequence

from storage.units import human_size  # noqa: F401  (the commands import it from here)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns separated by three spaces, as Docker prints them."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    if "." in t:  # Python wants at most 6 fractional digits
        head, _, rest = t.partition(".")
        frac = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(frac):]
        t = f"{head}.{frac[:6]}{tz}"
    try:
        when = _dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def human_age(text: str | None, now: _dt.datetime | None = None) -> str:
    when = parse_time(text)
    if when is None:
        return "N/A"
    now = now or _dt.datetime.now(_dt.timezone.utc)
    secs = (now - when).total_seconds()
    if secs < 0:
        return "Less than a second from now"
    for limit, div, unit in ((60, 1, "second"), (3600, 60, "minute"), (86400, 3600, "hour"),
                             (86400 * 14, 86400, "day"), (86400 * 60, 86400 * 7, "week"),
                             (86400 * 730, 86400 * 30, "month"), (float("inf"), 86400 * 365, "year")):
        if secs < limit:
            n = int(secs // div)
            if unit == "second" and n < 1:
                return "Less than a second ago"
            if n == 1:
                return f"{'An' if unit == 'hour' else 'A'} {unit} ago"
            return f"{n} {unit}s ago"
    return "N/A"


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
