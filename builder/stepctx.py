"""What a layer step (RUN, COPY, ADD, WORKDIR) may use: a narrow context, never the executor.

Steps decide their cache key and how to make their layer (a `Job`); the
executor looks the key up and runs the job on a miss. Through the context a
step reaches the store, the build options, SOURCE_DATE_EPOCH, a staging
directory for a layer tree, the file-digest cache, the build context, the
progress callback, and other stages (`stage(ref)`, built on demand).
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from storage.private import private_dir

from . import history
from .options import BuildEvent, BuildOptions

if TYPE_CHECKING:
    from . import layerio
    from .dispatch import StageState
    from .stages import Stage


@dataclass
class Job:
    """A layer step decided but not yet run: its key, its history text, and how
    to make its layer on a miss (None: the step turned out to need no layer).
    `link_key` marks a `COPY --link` layer, found by content alone (builder/CACHE.md)."""
    key: str
    created_by: str
    produce: Callable[[], "layerio.NewLayer | None"]
    link_key: str | None = None


class StepContext:
    def __init__(self, store, opts: BuildOptions, epoch: int | None, platform, filename: str, lexer,
                 emit: Callable[[BuildEvent], None], stage_of: Callable[[str, int], "tuple[Stage, StageState] | None"],
                 output: Callable[["Stage", str], None]):
        self.store = store
        self.opts = opts
        self.epoch = epoch
        self.platform = platform
        self.filename = filename       # the Dockerfile's name in error messages
        self.lexer = lexer
        self.emit = emit
        self._stage_of = stage_of
        self._output = output
        self.tmp_root = Path(store.root) / "builder" / "tmp"
        self._hashes = None
        self._context = None
        self._swept = False
        self._lock = threading.Lock()  # stages run in threads: the context and hash cache are made once

    # -- other stages -------------------------------------------------------------
    def stage(self, ref: str, of: int) -> "tuple[Stage, StageState] | None":
        """The stage `ref` names (from a step of stage `of`), built or waited for if it is not yet."""
        return self._stage_of(ref, of)

    def output(self, stage: "Stage", line: str) -> None:
        """A line a step printed (RUN output), shown under the current step."""
        self._output(stage, line)

    # -- what the build lends to RUN --mount ---------------------------------------------
    def secret(self, ident: str) -> bytes | None:
        """A --secret's value (None when not given, or its variable is unset)."""
        for s in self.opts.secrets:
            if s.id == ident:
                return s.read()
        return None

    def ssh_socket(self, ident: str) -> str | None:
        for s in self.opts.ssh:
            if s.id == ident:
                return s.socket
        return None

    # -- keys and time ---------------------------------------------------------------
    def key_extra(self) -> dict:
        return {"epoch": self.epoch} if self.epoch is not None else {}

    def now(self) -> str:
        return history.timestamp(self.epoch)

    # -- staging --------------------------------------------------------------------
    def staging(self):
        """A fresh private directory (a layer's tree, a RUN's upper), removed afterwards."""
        ctx = self

        class _Tmp:
            def __enter__(self) -> Path:
                ctx.sweep_tmp()
                self.path = Path(tempfile.mkdtemp(prefix="layer-", dir=ctx.tmp_root))
                return self.path

            def __exit__(self, *exc) -> None:
                shutil.rmtree(self.path, ignore_errors=True)

        return _Tmp()

    def sweep_tmp(self, older_than: float = 6 * 3600) -> None:
        """Once per build: remove staging trees that killed builds left behind."""
        private_dir(self.tmp_root)
        with self._lock:
            if self._swept:
                return
            self._swept = True
        cutoff = time.time() - older_than
        for p in self.tmp_root.iterdir():
            try:
                if p.lstat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
            except FileNotFoundError:
                pass

    # -- hashing and the context ---------------------------------------------------------
    @property
    def hashes(self):
        """File digests remembered across builds (context files and snapshot files)."""
        with self._lock:
            if self._hashes is None:
                from .context import HashCache

                self._hashes = HashCache(self.store.db)
            return self._hashes

    @property
    def context(self):
        """The build context, opened on first use (FROM-only builds never read it)."""
        hashes = self.hashes
        with self._lock:
            if self._context is None:
                from . import dockerignore
                from .context import Context

                root = Path(self.opts.context)
                dockerfile = None
                if self.opts.dockerfile and self.opts.dockerfile_text is None:
                    dockerfile = Path(self.opts.dockerfile)
                elif self.opts.dockerfile_text is None:
                    dockerfile = root / "Dockerfile"
                matcher = dockerignore.load(root, dockerfile)
                self._context = Context(root, matcher, hashes)
            return self._context

    def flush(self) -> None:
        if self._hashes is not None:
            self._hashes.flush()
