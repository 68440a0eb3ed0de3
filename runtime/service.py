"""What makes a container a service: restart policy, health check, stop signal.

Parsed from `docker run`'s flags and the image's config when the container
is created; applied by the monitor (monitor.py) for as long as it lives.
Durations are Go's ("1m30s", "500ms"), kept in nanoseconds as Docker's API does.
Imported by the monitor: only the standard library.
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from .errors import InvalidOption

RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
# Docker's health check defaults
DEFAULT_INTERVAL = 30_000_000_000
DEFAULT_TIMEOUT = 30_000_000_000
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
# Restart back-off (Docker's restart manager): doubles from 100 ms up to a minute,
# back to 100 ms after a run of 10 s or more.
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """A Go duration ("1m30s", "1.5s", "500ms") in ns; a bare number is seconds."""
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return int(float(t) * 1_000_000_000)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise InvalidOption(f"invalid duration {text!r} (e.g. 30s, 1m30s, 500ms)")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


def go_duration(seconds: float) -> str:
    """How Go prints a time.Duration: 200ms, 30s, 1m30s, 1h0m0s."""
    ns = round(seconds * 1e9)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size or unit == "ns":
                return f"{ns / size:g}{unit}"
    h, rest = divmod(ns, 3_600_000_000_000)
    m, rest = divmod(rest, 60_000_000_000)
    s = f"{rest / 1e9:g}s"
    return f"{h}h{m}m{s}" if h else (f"{m}m{s}" if m else s)


@dataclass(frozen=True)
class RestartPolicy:
    """--restart: no, on-failure[:N], always or unless-stopped."""
    name: str = "no"
    max_retries: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "RestartPolicy":
        name, _, count = (text or "no").partition(":")
        if name not in RESTART_POLICIES:
            raise InvalidOption(f"invalid restart policy {name!r} (no, always, on-failure[:N], unless-stopped)")
        if count and name != "on-failure":
            raise InvalidOption(f"maximum retry count cannot be used with restart policy '{name}'")
        if count and (not count.isdigit()):
            raise InvalidOption(f"invalid restart policy count {count!r}")
        return cls(name, int(count or 0))

    def should_restart(self, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
        """Docker's rule while its daemon is up (which for soko is: while the host is)."""
        if stopped_by_user or self.name == "no":
            return False
        if self.name in ("always", "unless-stopped"):
            return True
        return exit_code != 0 and (self.max_retries == 0 or restart_count < self.max_retries)

    def to_json(self) -> dict:
        return {"Name": self.name, "MaximumRetryCount": self.max_retries}

    @classmethod
    def from_json(cls, d: dict | None) -> "RestartPolicy":
        d = d or {}
        return cls(d.get("Name") or "no", int(d.get("MaximumRetryCount") or 0))


def healthcheck(image_check: dict | None, cmd: str | None = None, interval: str | None = None,
                timeout: str | None = None, start_period: str | None = None, retries: int | None = None,
                disable: bool = False) -> dict | None:
    """The container's Healthcheck (Docker's Config.Healthcheck): the image's, with the flags on top."""
    if disable:
        if cmd is not None:
            raise InvalidOption("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    hc = dict(image_check or {})
    if cmd is not None:
        hc["Test"] = ["CMD-SHELL", cmd]
    for key, value in (("Interval", interval), ("Timeout", timeout), ("StartPeriod", start_period)):
        if value is not None:
            ns = parse_duration(value)
            if ns and ns < 1_000_000:
                raise InvalidOption(f"--health-{key.lower()} cannot be less than 1ms")
            hc[key] = ns
    if retries is not None:
        if retries < 0:
            raise InvalidOption("--health-retries cannot be negative")
        hc["Retries"] = retries
    return hc or None


@dataclass(frozen=True)
class Probe:
    """A health check as the monitor runs it (None from `probe()`: there is none)."""
    argv: list[str]  # run in the container, as the container's user, env and workdir
    interval: float
    timeout: float
    start_period: float
    retries: int


def probe(hc: dict | None) -> Probe | None:
    test = list((hc or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        argv = ["/bin/sh", "-c", " ".join(test[1:])]
    elif test[0] == "CMD":
        argv = test[1:]
    else:
        argv = ["/bin/sh", "-c", " ".join(test)]
    if not argv:
        return None
    ns = lambda k, d: (hc.get(k) or d) / 1e9  # noqa: E731 - 0 means the default, as in Docker
    return Probe(argv, ns("Interval", DEFAULT_INTERVAL), ns("Timeout", DEFAULT_TIMEOUT), ns("StartPeriod", 0),
                 int(hc.get("Retries") or DEFAULT_RETRIES))


def parse_signal(text: str | int | None, default: int = signal.SIGTERM) -> int:
    """SIGTERM, TERM, term or 15 (Docker's --stop-signal, STOPSIGNAL, kill -s)."""
    if text is None or text == "":
        return int(default)
    if isinstance(text, int) or str(text).isdigit():
        n = int(text)
        if not 0 < n < signal.NSIG:
            raise InvalidOption(f"invalid signal: {text}")
        return n
    name = str(text).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidOption(f"invalid signal: {text}") from None
