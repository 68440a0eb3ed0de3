"""The implementations of registry.server.meta: SQLite (default) and PostgreSQL."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ...errors import ConfigError
from ..meta import RegistryMeta

SCHEMES = ("postgresql", "postgres")


def check_url(url: str) -> str | None:
    """What is wrong with a `--metadata` URL (None: nothing)."""
    if url == "sqlite":
        return None
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"not a URL: {url!r} ({e})"
    if parts.scheme not in SCHEMES:
        return f"want postgresql://USER@HOST:PORT/DB (or \"sqlite\", the default), not {url!r}"
    if not parts.path.strip("/"):
        return f"{url!r} names no database (postgresql://USER@HOST:PORT/DB)"
    return None


def open_metadata(root: Path, url: str | None = None) -> RegistryMeta:
    """The registry's metadata: `metadata.db` in `root`, or the PostgreSQL database at `url`."""
    if url is None or url == "sqlite":
        from .sqlite import SQLiteMeta

        return SQLiteMeta(root / "metadata.db")
    problem = check_url(url)
    if problem is not None:
        raise ConfigError(f"metadata: {problem}")
    from .postgres import PostgresMeta

    return PostgresMeta(url)
