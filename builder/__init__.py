"""Dockerfile -> image. The entry point is `build(store, BuildOptions, progress)`;
see builder/CACHE.md for what a cache hit means.

Names are imported on first use (PEP 562), so `soko build` can read its options
and try the no-change fast path (fastpath.py) without loading the whole builder."""
from __future__ import annotations

import importlib

_WHERE = {
    "build": "entry", "BuildError": "errors", "DockerfileError": "errors", "RunFailed": "errors",
    "StepError": "errors", "BuildEvent": "options", "BuildOptions": "options", "BuildResult": "options",
    "Output": "options",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'builder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
