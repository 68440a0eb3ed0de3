"""WORKDIR's layer half. BuildKit (Docker 20.10) commits a layer for every WORKDIR but `/`: the
directories it had to create, or nothing (an empty layer) when the path existed; its history
entry carries no `# buildkit` marker."""
from __future__ import annotations

import stat

from . import cache as cachemod
from . import dispatch, layerio
from .errors import BuildError, StepError
from .instructions import Workdir
from .perms import resolve_owner
from .stepctx import Job, StepContext
from .tree import Tree


def job(ctx: StepContext, state, stage, cmd: Workdir) -> Job:
    created_by = dispatch.do_workdir(state, cmd)
    path = state.workdir()
    key = cachemod.key(state.key, step=created_by, **ctx.key_extra())
    diff_ids = list(state.config.diff_ids)
    user = state.cfg.get("User") or ""

    def produce():
        if path == "/":
            return None
        view = ctx.view(diff_ids)
        parts, entry = view.resolve(path)
        if entry is not None and not stat.S_ISDIR(entry.st.st_mode):
            raise StepError(f"WORKDIR {path}: exists and is not a directory", cmd.line, ctx.filename)
        uid, gid = resolve_owner(view, user, cmd, ctx.filename) if user and entry is None else (0, 0)
        with ctx.staging() as root:
            if entry is None:
                tree = Tree(root, view, uid, gid)
                try:
                    tree.ensure_dir(parts)
                except BuildError as e:
                    raise StepError(f"WORKDIR {path}: {e}", cmd.line, ctx.filename) from None
                tree.finish()
            layer = layerio.write_dir(ctx.store, root, ctx.opts.storage_compression, ctx.epoch)
            layerio.adopt(ctx.store, [*diff_ids, layer.diff_id], root)
            return layer

    return Job(key, created_by, produce, suffix="")
