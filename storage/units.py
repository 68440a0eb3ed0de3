"""Sizes for people: the one formatter the CLI and the registry's web UI share."""
from __future__ import annotations

UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(n: float, precision: int = 3, sep: str = "") -> str:
    """go-units HumanSizeWithPrecision, as Docker shows sizes: decimal units,
    `%.{precision}g` (Docker lists use 3). `sep` goes between number and unit."""
    size = float(n)
    i = 0
    while size >= 1000 and i < len(UNITS) - 1:
        size /= 1000
        i += 1
    return f"{_go_g(size, precision)}{sep}{UNITS[i]}"


def _go_g(x: float, precision: int) -> str:
    """Go's %.Ng: as C's, except the exponent has at least two digits (so does Python's)."""
    return f"{x:.{precision}g}"
