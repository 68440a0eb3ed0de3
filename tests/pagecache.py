"""What the page cache holds of a file: Linux's cachestat(2) (6.5 and later)."""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

_NR_CACHESTAT = 451  # x86_64 and aarch64 (the generic table)
PAGE = os.sysconf("SC_PAGE_SIZE")


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64), ("nr_writeback", ctypes.c_uint64),
                ("nr_evicted", ctypes.c_uint64), ("nr_recently_evicted", ctypes.c_uint64)]


@dataclass
class CacheStat:
    cached: int  # bytes in the page cache
    dirty: int  # bytes not yet handed to the disk
    writeback: int  # bytes being written


def cachestat(path: Path) -> CacheStat:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        st = _Stat()
        if libc.syscall(_NR_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(st), 0) != 0:
            raise OSError(ctypes.get_errno(), f"cachestat {path}")
    finally:
        os.close(fd)
    return CacheStat(st.nr_cache * PAGE, st.nr_dirty * PAGE, st.nr_writeback * PAGE)


def resident(path: Path) -> int:
    """Bytes of `path` the page cache holds right now."""
    return cachestat(path).cached
