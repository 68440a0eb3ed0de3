"""Sizes for people: the one formatter the CLI and the registry's web UI share."""
from __future__ import annotations


def human_size(n: int, sep: str = "") -> str:
    """Decimal units, as Docker shows sizes (`sep` goes between number and unit)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(size)}{sep}B"
            return f"{size:.3g}{sep}{unit}"
        size /= 1000
    return f"{n}{sep}B"
