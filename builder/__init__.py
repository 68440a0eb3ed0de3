"""Dockerfile -> image. The entry point is `build(store, BuildOptions, progress)`;
see builder/CACHE.md for what a cache hit means."""
from __future__ import annotations

from .errors import BuildError, DockerfileError, RunFailed, StepError
from .options import BuildEvent, BuildOptions, BuildResult, Output
# Imported here, after the submodule of the same name, so `builder.build` stays the function.
from .build import build  # noqa: E402

__all__ = ["build", "BuildError", "DockerfileError", "RunFailed", "StepError", "BuildEvent", "BuildOptions",
           "BuildResult", "Output"]
