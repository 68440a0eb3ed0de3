"""What a layer step (RUN, COPY, ADD, WORKDIR) may use: a narrow context, never the executor.

Steps decide their cache key and how to make their layer (a `Job`); the
executor looks the key up and runs the job on a miss. Through the context a
step reaches the store, the build options, SOURCE_DATE_EPOCH, a staging
directory for a layer tree, the file-digest cache, the build context, the
progress callback, and other stages (`stage(ref)`, built on demand).
"""
from __future__ import annotations

import os
import shutil
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


class Incomplete(Exception):
    """The dry pass (executor.run) reached what only a real build can tell: the files of a
    stage not built yet. Control flow, never shown."""


@dataclass
class Job:
    """A step decided but not yet run: its key, its history text, and how to make
    its layer on a miss (None: the step turned out to need no layer; metadata
    steps have no `produce`). `link_key` marks a `COPY --link` layer, found by
    content alone; `fast_key` (COPY --from) is looked up before the sources are
    read, and `resolve_keys` gives key and link key when it misses (builder/CACHE.md).
    `plain`: a RUN whose history text says all of its inputs, which may be taken
    from a plain image (--cache-from)."""
    key: str | None
    created_by: str
    produce: Callable[[], "layerio.NewLayer | layerio.Pending | None"] | None
    link_key: str | None = None
    fast_key: str | None = None
    fast_lookup: bool = True      # False: the stage it names ran in this build; its files decide
    resolve_keys: Callable[[], tuple[str, str | None]] | None = None
    plain: bool = False
    suffix: str = " # buildkit"   # after created_by when the step made a layer (BuildKit's marker; WORKDIR has none)
    history: bool = True          # False: the step adds no history entry (ONBUILD, as BuildKit)

    def resolve(self) -> str:
        if self.key is None:
            assert self.resolve_keys is not None
            self.key, self.link_key = self.resolve_keys()
        return self.key


class StepContext:
    def __init__(self, store, opts: BuildOptions, epoch: int | None, platform, filename: str, lexer,
                 emit: Callable[[BuildEvent], None], stage_of: Callable[[str, int], "tuple[Stage, StageState] | None"],
                 output: Callable[["Stage", str], None], content_of: Callable[[int, int], list[str]],
                 settle: Callable[["StageState"], None]):
        self.store = store
        self.opts = opts
        self.epoch = epoch
        self.platform = platform
        self.filename = filename       # the Dockerfile's name in error messages
        self.lexer = lexer
        self.emit = emit
        self._stage_of = stage_of
        self._output = output
        self._content_of = content_of
        self._settle = settle
        self.tmp_root = Path(store.root) / "builder" / "tmp"
        self._hashes = None
        self._context = None
        self._swept = False
        self._lock = threading.Lock()  # stages run in threads: the context and hash cache are made once
        self.imports = None            # cacheimport.Imports, when --cache-from gave any
        self._once: dict = {}
        # what the build read besides the Dockerfile and the context (fastpath.py records it):
        self.images: dict[tuple[str, str], str] = {}  # (ref, platform) -> the manifest digest it named
        self.remote = False            # a URL or git source: only a real build can tell whether it changed
        self.listed = None             # fastpath.Probe of this build: the context as its walk saw it

    # -- other stages -------------------------------------------------------------
    def stage(self, ref: str, of: int) -> "tuple[Stage, StageState] | None":
        """The stage `ref` names (from a step of stage `of`), built or waited for if it is not yet."""
        return self._stage_of(ref, of)

    def stage_layers(self, index: int, of: int) -> list[str]:
        """The layers of stage `index` once built, for a step of stage `of` that reads its files
        (the stage is built now if only its key was known)."""
        return self._content_of(index, of)

    def resolve_image(self, ref: str, platform):
        """An image of the store by reference (FROM, --from, from=), remembered for fastpath.py."""
        image = self.store.resolve(ref, platform)
        with self._lock:
            self.images[(ref, str(platform))] = image.manifest.digest
        return image

    def settle(self, state: "StageState") -> None:
        """The stage's pending layer (StageState.pending: the step below a RUN that started on its
        tree) waited for and recorded, as if its step had just ended; its step's error, if the
        layer could not be written, is raised here."""
        self._settle(state)

    def need(self, diff_ids: list[str]) -> None:
        """Layers a step is about to read: fetch those a --cache-from hit left remote."""
        if self.imports is not None:
            self.imports.need(list(diff_ids))

    def view(self, diff_ids: list[str] | Callable[[], list[str]]) -> "layerio.RootView":
        """Read-only lookups in the tree of these layers (fetched first when imported); a
        callable gives them on first use (a stage built on demand)."""
        from . import layerio

        return layerio.RootView(self.store, diff_ids, self.need)

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

    def once(self, key, make):
        """`make()` the first time `key` is asked for in this build, its answer afterwards (a URL's
        validators, a git ref: asked once though a step's key may be computed twice)."""
        with self._lock:
            if key in self._once:
                return self._once[key]
        value = make()
        with self._lock:
            return self._once.setdefault(key, value)

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
                self.path = _private_dir_in(ctx.tmp_root, "layer-")
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
                matcher = dockerignore.load(root, self.opts.dockerfile_path())
                listed = self.listed if self.listed is not None and self.listed.root == str(root.resolve()) else None
                self._context = Context(root, matcher, hashes, listed.listing if listed is not None else None)
            return self._context

    def flush(self) -> None:
        if self._hashes is not None:
            self._hashes.flush()


def _private_dir_in(parent: Path, prefix: str) -> Path:
    """A new directory (mode 0700) with a random name in `parent`, as tempfile.mkdtemp makes, without
    importing tempfile (and random, with its hashes, for its names) on every build's way."""
    while True:
        path = parent / f"{prefix}{os.urandom(6).hex()}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
