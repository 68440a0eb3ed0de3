"""Container logs in Docker's json-file format, written and read back.

One JSON object per line: {"log": "text\\n", "stream": "stdout"|"stderr",
"time": RFC 3339 with nanoseconds}, as `docker logs` and log shippers read
`<id>-json.log`. Output is split at newlines; a line longer than 16 KiB is
cut into several records, and what is left without a newline is written when
the container ends. Imported by the monitor: only the standard library.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

MAX_LINE = 16 * 1024


def rfc3339(ns: int, fixed: bool = False) -> str:
    """Go's RFC3339Nano (trailing zeros of the fraction dropped), or with all nine digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if fixed:
        return f"{head}.{frac:09d}Z"
    digits = f"{frac:09d}".rstrip("0")
    return f"{head}.{digits}Z" if digits else f"{head}Z"


def parse_rfc3339(text: str) -> int:
    """ns since the epoch of an RFC 3339 time (any fraction, Z or an offset)."""
    import calendar
    import re

    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?\s*(Z|[+-]\d\d:?\d\d)?$",
                 text.strip())
    if not m:
        raise ValueError(f"invalid time {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0)))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        secs -= sign * (hh * 3600 + mm * 60)
    return secs * 1_000_000_000 + int(((frac or "") + "000000000")[:9])


class LogWriter:
    """Appends records to a json-file log; one partial line kept per stream."""

    def __init__(self, path: str | os.PathLike):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def _record(self, stream: str, data: bytes) -> bytes:
        return (json.dumps({"log": data.decode("utf-8", "replace"), "stream": stream,
                            "time": rfc3339(time.time_ns())}, separators=(",", ":")) + "\n").encode()

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial.get(stream, b"") + data
        out = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0 or nl - start >= MAX_LINE:
                if len(buf) - start >= MAX_LINE:
                    out.append(self._record(stream, buf[start:start + MAX_LINE]))
                    start += MAX_LINE
                    continue
                break
            out.append(self._record(stream, buf[start:nl + 1]))
            start = nl + 1
        self.partial[stream] = buf[start:]
        if out:
            _write_all(self.fd, b"".join(out))

    def flush(self) -> None:
        """Write what is left without a newline (the container ended)."""
        for stream, rest in self.partial.items():
            if rest:
                _write_all(self.fd, self._record(stream, rest))
                self.partial[stream] = b""

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class Record:
    stream: str
    time: str  # as written (RFC 3339, nanoseconds)
    ns: int
    data: bytes


def _parse(line: bytes) -> Record | None:
    try:
        d = json.loads(line)
        t = d["time"]
        return Record(d.get("stream", "stdout"), t, parse_rfc3339(t), d.get("log", "").encode())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read(path: str | os.PathLike, tail: int | None = None, since: int | None = None,
         until: int | None = None) -> tuple[list[Record], int]:
    """The records of a log (the last `tail`, within since/until ns), and the offset read up to."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        r = _parse(line)
        if r is None or (since is not None and r.ns < since) or (until is not None and r.ns > until):
            continue
        out.append(r)
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return out, end


def follow(path: str | os.PathLike, offset: int, done: Callable[[], bool], interval: float = 0.05,
           until: int | None = None) -> Iterator[Record]:
    """Records appended after `offset`, until `done()` says the writer has finished and all is read."""
    buf = b""
    while True:
        finished = done()  # asked before reading: what the writer wrote before finishing gets read
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            r = _parse(line)
            if r is not None and (until is None or r.ns <= until):
                yield r
        if finished and not chunk:
            return
        if not chunk:
            time.sleep(interval)
