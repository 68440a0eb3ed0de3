"""A rebuild with nothing changed, answered before the builder is loaded.

Most of a no-change `soko build` is start-up: importing the builder, parsing the
Dockerfile, walking the context through the stat cache, looking every step up.
So a build records, beside its image, a fingerprint of what it read; the next
`soko build` with the same options takes the fingerprint again (a walk of the
context with lstat: nothing is read) and, when it is the same and everything
the recorded answer depends on still is, tags that image and shows the lines a
build that hits every step shows. Any doubt, and the build runs as usual.

The fingerprint (`Probe`):
- the *slot*: every option that decides the image (context and Dockerfile
  paths, tags, build args, target, labels, network, compression, the sources
  of secrets and ssh agents (never their values, which no key holds either),
  SOURCE_DATE_EPOCH, the machine, the cache key format);
- the *state*: the lstat of every entry of the context (directories that
  .dockerignore excludes with no exception under them are not entered) and the
  stat of the Dockerfile and both ignore files: path, mode, size, mtime, ctime,
  inode, device. A write, rename, chmod or utime changes the ctime, which
  nobody can set back. Racy rule (context.racy): an entry whose mtime or ctime
  is not clearly older than the walk may still change within the same clock
  tick unseen; a build that saw one records nothing (the next build will).

Checked again at replay: each image the build named by reference (FROM,
--from, from=) resolves to the same manifest; each build-cache entry the
build looked up or wrote holds what it held then (an entry rewritten by
--no-cache, pruned, or whose layer was collected changes the answer); the
image and its blobs are stored.

Never recorded or tried: --no-cache, --cache-from/--cache-to, --output, a
Dockerfile from stdin, builds with URL or git sources (only fetching can
tell whether those changed), and contexts of more than MAX_ENTRIES.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .racy import RACY_COARSE_NS, racy
from .options import BuildEvent, BuildOptions

FORMAT = "soko-fastpath-v1"
# A context this big is not walked for a fingerprint (its lstat would cost more than the builds it
# could answer save: a Dockerfile that copies one directory of a huge tree walks only that one).
MAX_ENTRIES = 50_000
MIGRATIONS = [
    """
    CREATE TABLE builder_fastpath (
        slot TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        record TEXT NOT NULL,
        updated REAL NOT NULL
    );
    """,
]


# the build events a recorded answer shows again (output lines come from steps that ran)
RECORDED_ACTIONS = ("step", "done", "warning", "notice")


class _TooBig(Exception):
    """More than MAX_ENTRIES in the context: no fingerprint."""


@dataclass
class Probe:
    """A build's fingerprint (see the module's docstring)."""

    slot: str
    state: str
    racy: bool   # an entry changed too recently to vouch for: do not record
    root: str = ""  # the context directory walked (its real path)
    # what the walk saw: directory (relative path) -> its names, sorted, and their lstats; a build
    # that runs after all walks them without listing them again (context.Context)
    listing: dict[str, tuple[list[str], list[os.stat_result]]] = field(default_factory=dict, repr=False)


@dataclass
class Replay:
    """A recorded build's answer: what `build` would have returned and shown."""
    image_id: str
    manifest_digest: str
    tags: list[str]
    events: list[BuildEvent]


def eligible(opts: BuildOptions) -> bool:
    return not (opts.no_cache or opts.output or opts.cache_from or opts.cache_to
                or opts.dockerfile_text is not None)


def probe(opts: BuildOptions) -> Probe | None:
    """The fingerprint of a build about to run; None when it cannot have one (then it is neither
    replayed nor recorded; the build itself reports any error)."""
    from . import cache, dockerignore
    from .errors import BuildError

    if not eligible(opts):
        return None
    started = time.time_ns()
    dockerfile = opts.dockerfile_path()
    assert dockerfile is not None
    slot = {
        "format": FORMAT, "keys": cache.KEY_VERSION, "machine": os.uname().machine,
        "context": os.path.realpath(opts.context), "dockerfile": os.path.abspath(dockerfile),
        "tags": opts.tags, "build_args": opts.build_args, "target": opts.target, "labels": opts.labels,
        "network": opts.network, "compression": opts.compression,
        "epoch": [opts.source_date_epoch, os.environ.get("SOURCE_DATE_EPOCH")],
        "secrets": [[s.id, s.file and os.path.abspath(s.file), s.env] for s in opts.secrets],
        "ssh": [[s.id, s.socket] for s in opts.ssh],
    }
    lines: list[str] = []
    fresh = False
    try:
        ignores = dockerignore.candidates(Path(opts.context), dockerfile)
        for what, path in [("dockerfile", dockerfile), *(("ignore", p) for p in ignores)]:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                lines.append(f"{what} {path} absent")
                continue
            lines.append(f"{what} {path} {_stat_line(st)}")
            fresh = fresh or racy(st.st_mtime_ns, started) or racy(st.st_ctime_ns, started)
        matcher = dockerignore.load(Path(opts.context), dockerfile)
        listing: dict[str, tuple[list[str], list[os.stat_result]]] = {}
        fresh = _walk(slot["context"], matcher, started, lines, listing) or fresh
    except (OSError, BuildError, _TooBig):
        return None
    return Probe(_digest(json.dumps(slot, sort_keys=True)), _digest("\n".join(lines)), fresh, slot["context"],
                 listing)


def _stat_line(st: os.stat_result) -> str:
    return f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev}"


def _walk(root: str, matcher, started: int, lines: list[str],
          listing: dict[str, tuple[list[str], list[os.stat_result]]] | None = None) -> bool:
    """Append a line per context entry (sorted, depth first); True when one is racy.
    Entries are looked up relative to their open directory (one path component per lstat);
    `listing` gets each directory's entries (Probe.listing)."""
    fresh = False
    old = started - RACY_COARSE_NS  # no time before this is racy: most entries need no closer look
    lines.append(f". {_stat_line(os.lstat(root))}")
    todo = [""]
    while todo:
        rel = todo.pop()
        fd = os.open(os.path.join(root, rel) if rel else root,
                     os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            names = sorted(os.listdir(fd))
            stats = [os.stat(name, dir_fd=fd, follow_symlinks=False) for name in names]
            if listing is not None:
                listing[rel] = (names, stats)
            for name, st in zip(names, stats):
                child = f"{rel}/{name}" if rel else name
                lines.append(f"{child}\0{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} "
                             f"{st.st_ino} {st.st_dev}")  # _stat_line, inline: thousands of entries
                if (st.st_mtime_ns >= old or st.st_ctime_ns >= old) and \
                        (racy(st.st_mtime_ns, started) or racy(st.st_ctime_ns, started)):
                    fresh = True
                if stat.S_ISDIR(st.st_mode) and not (matcher and matcher.excluded(child)
                                                     and not matcher.may_include_under(child)):
                    todo.append(child)
            if len(lines) > MAX_ENTRIES:
                raise _TooBig()
        finally:
            os.close(fd)
    return fresh


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


# -- replaying ----------------------------------------------------------------------------
def replay(store, opts: BuildOptions, found: Probe) -> Replay | None:
    """The recorded answer for this fingerprint, its image tagged, when everything it depends on
    is as it was; None otherwise (nothing changed then: the build runs as usual)."""
    import sqlite3

    from storage.errors import StorageError
    from storage.model import Platform

    from . import cache

    try:
        row = store.db.one("SELECT state, record FROM builder_fastpath WHERE slot=?", (found.slot,))
    except sqlite3.OperationalError:  # no build recorded in this store yet
        return None
    if row is None or row[0] != found.state:
        return None
    try:
        rec = json.loads(row[1])
        for ref, platform, digest in rec["images"]:
            if store.resolve(ref, Platform.parse(platform)).manifest.digest != digest:
                return None
        if cache.states(store, list(rec["cache"])) != rec["cache"]:
            return None
        if store.db.one("SELECT 1 FROM images WHERE manifest_digest=?", (rec["manifest"],)) is None:
            return None
        if not all(store.blobs.has(d) for d in rec["blobs"]):
            return None
        events = [BuildEvent(**e) for e in rec["events"]]
    except (StorageError, ValueError, KeyError, TypeError):  # gone, or a record this soko cannot read
        return None
    cache.mark_used(store, [k for k, v in rec["cache"].items() if v is not None])
    tags = [store.tag(t, rec["manifest"]).familiar() for t in opts.tags]
    return Replay(rec["image_id"], rec["manifest"], tags, events)


# -- recording ----------------------------------------------------------------------------
def record(store, found: Probe, *, image_id: str, manifest, seen: dict[str, str | None],
           images: dict[tuple[str, str], str], events: list[BuildEvent], stages: set[str | None]) -> bool:
    """Remember a finished build's answer under its fingerprint. `seen`: the build cache entries
    it looked up or wrote, as it found or left them; `events`: what it showed; `stages`: the
    stages (as events name them) a rebuild that hits every step shows. Kept of the events: those
    stages' steps, marked cached and numbered again in order, and the messages (the build's own:
    parse notices, unused build args). False when the answer cannot be vouched for: a racy
    entry, or a cache entry another build changed since."""
    import sqlite3

    from storage.errors import StorageError

    from . import cache

    if found.racy:
        return False
    if cache.states(store, list(seen)) != seen:
        return False
    shown = []
    numbers: dict[int, int] = {}
    for e in events:
        if e.action in ("step", "done"):
            if e.stage not in stages:
                continue
            n = numbers.setdefault(e.step, len(numbers) + 1)
            e = BuildEvent(**{**asdict(e), "cached": True, "elapsed": 0.0, "step": n, "id": f"#{n}"})
        elif e.action not in RECORDED_ACTIONS:
            continue  # output lines and runtime notes come from steps that ran
        shown.append(asdict(e))
    rec = {"image_id": image_id, "manifest": manifest.digest,
           "blobs": [manifest.digest, manifest.config.digest, *(d.digest for d in manifest.layers)],
           "images": [[ref, platform, digest] for (ref, platform), digest in sorted(images.items())],
           "cache": seen, "events": shown}
    try:
        store.db.migrate("builder_fastpath", MIGRATIONS)
        store.db.execute("INSERT INTO builder_fastpath(slot, state, record, updated) VALUES(?,?,?,?) "
                         "ON CONFLICT(slot) DO UPDATE SET state=excluded.state, record=excluded.record, "
                         "updated=excluded.updated", (found.slot, found.state, json.dumps(rec), time.time()))
    except (StorageError, sqlite3.Error):
        return False  # the image is built and tagged: a record it could not keep fails nothing
    return True

