"""Dockerfile -> image. The entry point is `builder.build.build`; see builder/CACHE.md
for what a cache hit means."""
from __future__ import annotations

from .errors import BuildError, DockerfileError, RunFailed, StepError
from .options import BuildEvent, BuildOptions, BuildResult, Output

__all__ = ["build", "BuildError", "DockerfileError", "RunFailed", "StepError", "BuildEvent", "BuildOptions",
           "BuildResult", "Output"]


def build(store, opts: BuildOptions, progress=None) -> BuildResult:
    """See builder.build.build (imported lazily: `import builder` stays cheap)."""
    from .build import build as _build

    return _build(store, opts, progress)
