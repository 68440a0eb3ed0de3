"""Plain-text rendering shared by the commands, in Docker's formats: sizes (go-units),
durations (`2 hours ago`), times (Go's RFC 3339 and time.String), short IDs, ellipsis."""
from __future__ import annotations

import datetime as _dt
import re
from typing import Sequence

_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*([Zz]|[+-]\d{2}:?\d{2})?")
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, what Docker shows for an unknown date


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], minwidth: int = 10) -> str:
    """A table laid out as Docker lays them out (Go's tabwriter: cells at least `minwidth`
    wide, padding 3 included)."""
    from .formatter import tabwrite

    text = "\n".join("\t".join(str(c) for c in row) for row in [headers, *rows])
    return tabwrite(text, minwidth)


def human_size(n: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision (storage/units.py, shared with the registry's web UI;
    imported here, not at start-up: `soko --help` loads no component)."""
    from storage.units import human_size as size

    return size(n, precision)


def parse_time(text: str | None) -> tuple[_dt.datetime, int] | None:
    """An RFC 3339 time -> (aware datetime to the second, nanoseconds); None if it is not one."""
    if not text:
        return None
    m = _TIME_RE.fullmatch(text.strip())
    if not m:
        return None
    day, clock, frac, zone = m.groups()
    if not zone or zone in "Zz":
        tz = _dt.timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        when = _dt.datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=tz)
    except ValueError:
        return None
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    return when, nanos


def rfc3339_nano(text: str | None) -> str:
    """Go's time.RFC3339Nano of a parsed time, as `docker inspect` prints Created: trailing
    zeros of the fraction dropped, `Z` for UTC, the zero time when there is none."""
    parsed = parse_time(text)
    if parsed is None:
        return ZERO_TIME
    when, nanos = parsed
    frac = f".{nanos:09d}".rstrip("0").rstrip(".")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + _zone(when)


def timestamp_rfc3339_nano(ts: float | None) -> str:
    """A Unix time as Go's RFC3339Nano in UTC (inspect's Metadata.LastTagTime)."""
    if not ts:
        return ZERO_TIME
    when = _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc)
    nanos = int(round((ts - int(ts)) * 1e9))
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}".rstrip("0").rstrip(".") + "Z"


def _zone(when: _dt.datetime) -> str:
    off = when.utcoffset() or _dt.timedelta(0)
    if not off:
        return "Z"
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def unix_seconds(text: str | None) -> int | None:
    parsed = parse_time(text)
    return int(parsed[0].timestamp()) if parsed else None


def local_rfc3339(text: str | None) -> str:
    """Go's time.Unix(s, 0).Format(time.RFC3339) in local time (`history -H=false`, CreatedAt)."""
    secs = unix_seconds(text)
    return ZERO_TIME if secs is None else local_rfc3339_at(secs)


def local_rfc3339_at(ts: float) -> str:
    when = _dt.datetime.fromtimestamp(int(ts)).astimezone()
    return when.strftime("%Y-%m-%dT%H:%M:%S") + _zone(when)


def go_time_string(text: str | None) -> str:
    """Go's time.Unix(s, 0).String() in local time: `2024-01-02 03:04:05 +0000 UTC` (images' CreatedAt)."""
    secs = unix_seconds(text)
    if secs is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    when = _dt.datetime.fromtimestamp(secs).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %z ") + (when.tzname() or "")


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as Docker shows ages (`About an hour`, `3 weeks`)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_age(text: str | None, now: _dt.datetime | None = None) -> str:
    """`2 hours ago` (Docker's CreatedSince); `N/A` without a date."""
    secs = unix_seconds(text)
    if secs is None:
        return "N/A"
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return human_duration(now.timestamp() - secs) + " ago"


def short_id(digest: str) -> str:
    """Docker's stringid.TruncateID: the hex part, 12 characters."""
    return digest.split(":", 1)[-1][:12]


def truncate(text: str, width: int) -> str:
    """Docker's formatter.Ellipsis for plain text: `width - 1` characters and `…`."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"
