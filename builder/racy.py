"""git's racy rule, for the stat cache (context.py) and the fast path (fastpath.py).

Kernel file times come from a coarse clock (a tick, 1-10 ms, behind the real
time): a file written up to that long before it was read (or looked at) may
change again without its mtime or ctime moving. A whole-second time may come
from a file system that keeps no more (FAT keeps 2 s).
"""
from __future__ import annotations

RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000  # the widest margin: no time older than this before `checked` is racy


def racy(time_ns: int, checked_ns: int) -> bool:
    """Whether a file time (mtime, ctime) is too close to `checked_ns`, when the file was read or
    looked at, to vouch that it has not changed since within the same clock tick."""
    margin = RACY_COARSE_NS if time_ns % 1_000_000_000 == 0 else RACY_NS
    return time_ns >= checked_ns - margin
