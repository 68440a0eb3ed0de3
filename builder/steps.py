"""Layer steps by instruction type, as dispatch.HANDLERS is for config-only ones.

Each entry takes (StepContext, StageState, Stage, Command) and returns a
stepctx.Job: the step's cache key and how to make its layer on a miss (a
layerio.NewLayer, or a layerio.Pending still being written).
"""
from __future__ import annotations

from . import copy, run, workdir
from .instructions import Copy, Run, Workdir

LAYER_STEPS = {Run: run.job, Copy: copy.job, Workdir: workdir.job}

# Steps that may start while the layer below them is still being written (StageState.pending):
# a RUN runs on that layer's tree and has the executor settle it (StepContext.settle) when done.
ON_PENDING = {Run}
