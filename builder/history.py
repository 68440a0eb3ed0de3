"""History entries and timestamps, written the way BuildKit writes them.

`created_by` follows BuildKit's forms so `docker history`, dive and friends
show soko images like any other: `RUN |1 V=2 /bin/sh -c make # buildkit`,
`COPY app /srv # buildkit`, `ENV A=1`, `CMD ["a" "b"]` (Go's %q of a string
slice), `EXPOSE map[80/tcp:{}]`, `VOLUME [/data]`, `HEALTHCHECK &{[...] "30s" ...}`.
Steps that make no layer carry `empty_layer: true`.
"""
from __future__ import annotations

import json
import os

COMMENT = "buildkit.dockerfile.v0"


def timestamp(epoch: int | None = None) -> str:
    """RFC 3339 in UTC: SOURCE_DATE_EPOCH when given, else now."""
    import datetime as _dt  # only when a step is recorded: a rebuild that hits everything needs none
    if epoch is not None:
        return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def source_date_epoch(build_args: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH from --build-arg (as BuildKit reads it) or the environment."""
    for src in (build_args or {}, environ if environ is not None else os.environ):
        raw = src.get("SOURCE_DATE_EPOCH")
        if raw not in (None, ""):
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"SOURCE_DATE_EPOCH must be an integer, got {raw!r}") from None
            if value < 0:
                raise ValueError("SOURCE_DATE_EPOCH must not be negative")
            return value
    return None


def entry(created_by: str, created: str, empty_layer: bool) -> dict:
    out = {"created": created, "created_by": created_by, "comment": COMMENT}
    if empty_layer:
        out["empty_layer"] = True
    return out


def go_quote(s: str) -> str:
    """Go's %q of a string (JSON escaping is close enough for printable text)."""
    return json.dumps(s, ensure_ascii=False)


def go_quoted_list(items: list[str]) -> str:
    """fmt.Sprintf("%q", []string{...}) -> `["a" "b"]`."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def go_list(items: list[str]) -> str:
    """fmt.Sprintf("%v", []string{...}) -> `[a b]`."""
    return "[" + " ".join(items) + "]"


def go_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim_float(ns / size) + unit
    hours, rem = divmod(ns, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    secs = _trim_float(rem / 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim_float(x: float) -> str:
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def healthcheck_text(hc: dict) -> str:
    """BuildKit's `HEALTHCHECK %q` of the health config struct: Docker 20.10's struct has no
    StartInterval (its durations are Interval, Timeout, StartPeriod); a newer Docker's has, so
    soko writes a fourth duration when --start-interval was given."""
    retries = hc.get("Retries", 0)
    rune = f"'\\x{retries:02x}'" if retries < 32 else f"'{chr(retries)}'"
    fields = ("Interval", "Timeout", "StartPeriod") + (("StartInterval",) if hc.get("StartInterval") else ())
    return ("HEALTHCHECK &{" + go_quoted_list(hc.get("Test", [])) + " " +
            " ".join(go_quote(go_duration(hc.get(k, 0))) for k in fields) + f" {rune}}}")


def expose_text(ports: list[str]) -> str:
    """Go's %v of the instruction's port set (a map: each port once, sorted)."""
    return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(set(ports))) + "]"


def run_text(argv: list[str], args: list[tuple[str, str]]) -> str:
    """`RUN |N K=V ... argv` (+ ` # buildkit` added by the caller for layer steps)."""
    prefix = [f"|{len(args)}", *(f"{k}={v}" for k, v in args)] if args else []
    return "RUN " + " ".join([*prefix, *argv])
