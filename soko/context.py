"""What the global options decide (--root, --debug), for every command."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Context:
    """The store and --debug, as every command gets them (click's `ctx.obj`)."""
    root: Path
    debug: bool

    def image_store(self):
        from storage.images import ImageStore

        return ImageStore(self.root)


def default_root() -> Path:
    env = os.environ.get("SOKO_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/soko")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "soko"


def context(root: Path | None, debug: bool) -> Context:
    """The global options applied: the store, and debug logging with --debug."""
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    return Context(root or default_root(), debug)
