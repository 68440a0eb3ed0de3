"""The build context: a directory seen through .dockerignore, read only on demand.

Nothing is read up front. COPY and ADD ask for the paths their sources
match; only those are walked, and only those files are hashed. File digests
are cached in the store's database keyed by (path, size, mtime, inode), so
a rebuild re-reads only files that changed.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from storage.errors import SymlinkLoop
from storage.pathwalk import DirTree, walk

from .dockerignore import Matcher
from .errors import ContextError
from .racy import racy

_WILDCARD = re.compile(r"(?<!\\)[*?\[]")
CHUNK = 1 << 20
READERS = 8  # files hashed at once (digest_all)
BATCH = 64   # files per task of digest_all's threads
KEEP_FILE = 256 << 10   # files up to this size read for their digest are kept for the COPY (content)
KEEP_TOTAL = 64 << 20   # ... up to this much in all, per build
SLOW_READ = 100e-6  # seconds per file above which a batch waited on the disk: read the rest side by side

MIGRATIONS = [
    """
    CREATE TABLE builder_file_hashes (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        digest TEXT NOT NULL
    );
    """,
    # 2: the mode is part of what must match, and `checked` (when the digest was made) guards racy entries
    """
    ALTER TABLE builder_file_hashes ADD COLUMN mode INTEGER NOT NULL DEFAULT -1;
    ALTER TABLE builder_file_hashes ADD COLUMN checked_ns INTEGER NOT NULL DEFAULT 0;
    """,
]

_Stat = tuple[int, int, int, int]  # size, mtime_ns, inode, mode


def _stat_key(st: os.stat_result) -> _Stat:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode


class Entry:
    """One path of the (filtered) context. `abs` is its absolute path as a string (a walk of
    thousands of files makes no Path objects until one is asked for)."""
    __slots__ = ("rel", "abs", "st", "named")

    def __init__(self, rel: str, path: "Path | str", st: os.stat_result, named: str | None = None):
        self.rel = rel            # '/'-separated, relative to the context root; "" is the root
        self.abs = str(path)
        self.st = st              # lstat
        self.named = named        # the path as a source named it, before symlinks were resolved

    @property
    def path(self) -> Path:
        return Path(self.abs)

    @property
    def name(self) -> str:
        """What a copy of it into a directory is called (BuildKit: the base of the name as given)."""
        return (self.rel if self.named is None else self.named).rstrip("/").rpartition("/")[2]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


class HashCache:
    """sha256 of file contents, remembered across builds: a stat cache.

    An entry holds (size, mtime, inode, mode) of the file when it was read and
    when (`checked`); a later stat equal in all four gives the digest without
    reading the file, unless the entry is *racy*: the file's mtime is not
    clearly older than the moment it was read, so it may have changed again
    within the same timestamp tick (git's racy-git rule). Racy files are read
    again; once their mtime is older than the last reading, they are trusted.
    Safe for the threads of one build (stages hash side by side).
    """

    def __init__(self, db=None):
        self.db = db
        self._mem: dict[str, tuple[_Stat, int, str]] = {}  # path -> (stat key, checked_ns, digest)
        self._loaded: set[str] = set()
        self._dirty: dict[str, tuple[_Stat, int, str]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # files actually read (tests check rebuilds read nothing)
        self._kept: dict[str, tuple[_Stat, bytes]] = {}  # small files read in this build (content)
        self._kept_bytes = 0
        if db is not None:
            db.migrate("builder_context", MIGRATIONS)

    def _load(self, root: Path | str) -> None:
        key = root if isinstance(root, str) else str(root)
        if self.db is None or key in self._loaded:
            return
        with self._lock:
            if key in self._loaded:
                return
            lo = key.rstrip("/") + "/"
            hi = key.rstrip("/") + "0"  # '0' sorts right after '/'
            for r in self.db.query("SELECT path, size, mtime_ns, inode, mode, checked_ns, digest "
                                   "FROM builder_file_hashes WHERE path >= ? AND path < ?", (lo, hi)):
                self._mem.setdefault(r[0], ((r[1], r[2], r[3], r[4]), r[5], r[6]))
            self._loaded.add(key)

    def _valid(self, path: str, st: os.stat_result) -> str | None:
        hit = self._mem.get(path)
        if hit is None or hit[0] != _stat_key(st):
            return None
        return None if racy(st.st_mtime_ns, hit[1]) else hit[2]

    def digest(self, path: Path | str, st: os.stat_result, root: Path | str) -> str:
        self._load(root)
        key = str(path)
        known = self._valid(key, st)
        if known is not None:
            return known
        checked = time.time_ns()  # before reading: a change while we read stays racy
        try:
            hexdigest, data = _sha256_of(path, st.st_size, st.st_size <= KEEP_FILE)
        except OSError as e:
            raise ContextError(f"cannot read {path}: {e.strerror}") from None
        digest = "sha256:" + hexdigest
        with self._lock:
            self.reads += 1
            self._mem[key] = self._dirty[key] = (_stat_key(st), checked, digest)
            if data is not None and self._kept_bytes + len(data) <= KEEP_TOTAL:
                self._kept[key] = (_stat_key(st), data)
                self._kept_bytes += len(data)
        return digest

    def content(self, path: Path | str, st: os.stat_result) -> bytes | None:
        """The bytes `digest` read from `path` in this build, while its lstat is still `st`: a
        COPY writes them (and its layer takes them) instead of reading the file again."""
        kept = self._kept.get(str(path))
        return kept[1] if kept is not None and kept[0] == _stat_key(st) else None

    def digest_all(self, files: list[tuple[str, os.stat_result]], root: Path | str) -> None:
        """Make sure each file's digest is known, reading those that are not side by side: hashing
        thousands of small files not in the page cache waits on the disk, not on the CPU."""
        self._load(root)
        todo = [(p, st) for p, st in files if self._valid(p, st) is None]
        # one at a time while the files come from the page cache (threads only add CPU then);
        # side by side from the first batch that waited on the disk
        done = 0
        while done < len(todo):
            started = time.monotonic()
            for p, st in todo[done:done + BATCH]:
                self.digest(p, st, root)
            done += BATCH
            if time.monotonic() - started > BATCH * SLOW_READ:
                break
        todo = todo[done:]
        if not todo:
            return
        from concurrent.futures import ThreadPoolExecutor

        def some(batch: list[tuple[str, os.stat_result]]) -> None:
            for p, st in batch:
                self.digest(p, st, root)

        # a task per BATCH files, not per file: a task costs about what hashing a small cached file
        # does, and thousands of them double the CPU time
        with ThreadPoolExecutor(READERS) as pool:
            for _ in pool.map(some, [todo[i:i + BATCH] for i in range(0, len(todo), BATCH)]):
                pass

    def known(self, path: Path | str, st: os.stat_result, root: Path | str) -> str | None:
        """The remembered digest of `path` if still valid, without reading it."""
        self._load(root)
        return self._valid(str(path), st)

    def flush(self) -> None:
        if self.db is None:
            return
        with self._lock:
            rows = [(k, *st, checked, digest) for k, (st, checked, digest) in self._dirty.items()]
            self._dirty.clear()
        if not rows:
            return
        with self.db.transaction() as c:
            c.executemany("INSERT INTO builder_file_hashes(path, size, mtime_ns, inode, mode, checked_ns, digest) "
                          "VALUES(?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
                          "mtime_ns=excluded.mtime_ns, inode=excluded.inode, mode=excluded.mode, "
                          "checked_ns=excluded.checked_ns, digest=excluded.digest", rows)


def _sha256_of(path: Path | str, size: int, keep: bool = False) -> tuple[str, bytes | None]:
    """The hex sha256 of a file's content, and with `keep` the content itself when it was read
    in one piece. Reads sized by its lstat (plus one byte, to see it grew): a context is mostly
    small files, and asking for 1 MiB each time costs an allocation of 1 MiB (an mmap and
    munmap) per file."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    first = b""  # only the first read is kept: a big file is hashed, never held whole
    reads = total = 0
    try:
        want = min(size + 1, CHUNK)
        while chunk := os.read(fd, want):
            h.update(chunk)
            reads += 1
            if reads == 1:
                first = chunk
            total += len(chunk)
            if total == size and len(chunk) < want:
                break  # short of the extra byte asked for, at the size the lstat gave: the end
            want = CHUNK
    finally:
        os.close(fd)
    return h.hexdigest(), (first if keep and reads <= 1 else None)


def clean_source(src: str) -> str:
    """A COPY source relative to the context root: a leading `/` and any `..`
    that would leave the root are dropped, trailing slashes ignored."""
    parts: list[str] = []
    for comp in src.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


def has_wildcards(path: str) -> bool:
    return bool(_WILDCARD.search(path))


def component_regex(pattern: str) -> re.Pattern:
    """Go's filepath.Match for one path component."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = i
            cls = ["["]
            if j < n and pattern[j] == "^":
                cls.append("^")
                j += 1
            while j < n and pattern[j] != "]":
                c = pattern[j]
                if c == "\\" and j + 1 < n:
                    cls.append(re.escape(pattern[j + 1]))
                    j += 2
                    continue
                cls.append("-" if c == "-" else re.escape(c))
                j += 1
            if j >= n:
                raise ContextError(f"syntax error in pattern {pattern!r}")
            cls.append("]")
            out.append("".join(cls))
            i = j + 1
        else:
            out.append(re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.S)


class Context:
    """A build context directory filtered by a .dockerignore matcher."""

    def __init__(self, root: str | Path, matcher: Matcher | None = None, hashes: HashCache | None = None,
                 listed: dict[str, tuple[list[str], list[os.stat_result]]] | None = None):
        """`listed`: directories already listed in this build (fastpath.Probe.listing: relative
        path -> its names, sorted, and their lstats), walked without listing them again."""
        self.root = Path(root).resolve()
        self._root = str(self.root)
        if not self.root.is_dir():
            raise ContextError(f"build context {root} is not a directory")
        self.matcher = matcher or Matcher([])
        self.hashes = hashes or HashCache()
        self._listed = listed or {}

    # -- visibility ------------------------------------------------------------
    def _abs(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self._abs(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def visible(self, rel: str, st: os.stat_result) -> bool:
        if not rel or not self.matcher:
            return True
        if not self.matcher.excluded(rel):
            # a parent excluded without exceptions reaching here hides it too
            return True
        if stat.S_ISDIR(st.st_mode) and self.matcher.may_include_under(rel):
            return next(self.walk(rel), None) is not None
        return False

    def resolve(self, rel: str, follow: bool = True) -> str | None:
        """`rel` with every symlink resolved as if the context were `/` (absolute
        targets start at the root, `..` stops there), as BuildKit resolves paths in
        the context it received; None when a component is missing."""
        try:
            w = walk(DirTree(self.root), rel, follow_last=follow)
        except SymlinkLoop:
            raise ContextError(f"too many levels of symbolic links: {rel}") from None
        return "/".join(w.parts) if w.node is not None else None

    def lookup(self, rel: str, follow: bool = True) -> Entry | None:
        """The entry at `rel` (symlinks resolved inside the context, the last one
        too when `follow`); None when absent or excluded by .dockerignore."""
        real = self.resolve(rel, follow)
        if real is None:
            return None
        if not real:
            return Entry("", self.root, os.lstat(self.root), rel)
        st = self._lstat(real)
        if st is None or not self.visible(real, st):
            return None
        return Entry(real, self._abs(real), st, rel)

    # -- listing ---------------------------------------------------------------
    def walk(self, rel: str) -> Iterator[Entry]:
        """Everything visible under directory `rel` (not `rel` itself), sorted, parents first."""
        base = str(self._abs(rel))
        listed = self._listed.get(rel)
        if listed is not None:
            yield from self._walk_in(rel, base, zip(*listed))
            return
        try:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ContextError(f"cannot list {base}: {e.strerror}") from None
        try:
            try:
                names = sorted(os.listdir(fd))
            except OSError as e:
                raise ContextError(f"cannot list {base}: {e.strerror}") from None
            # looked up one component each, relative to the open directory
            yield from self._walk_in(rel, base, ((n, os.stat(n, dir_fd=fd, follow_symlinks=False)) for n in names))
        finally:
            os.close(fd)

    def _walk_in(self, rel: str, base: str, entries: Iterable[tuple[str, os.stat_result]]) -> Iterator[Entry]:
        """`walk` of directory `rel` given its entries (name and lstat, sorted by name)."""
        matcher = self.matcher if self.matcher else None
        prefix = base.rstrip("/") + "/"
        for name, st in entries:
            child = f"{rel}/{name}" if rel else name
            path = prefix + name
            excluded = matcher is not None and matcher.excluded(child)
            if stat.S_ISDIR(st.st_mode):
                if excluded:
                    if matcher.may_include_under(child):  # type: ignore[union-attr]
                        sub = self.walk(child)
                        first = next(sub, None)
                        if first is not None:
                            yield Entry(child, path, st)
                            yield first
                            yield from sub
                    continue
                yield Entry(child, path, st)
                yield from self.walk(child)
            elif not excluded:
                yield Entry(child, path, st)

    def glob(self, pattern: str) -> list[Entry]:
        """Entries matching a cleaned source pattern with wildcards, sorted."""
        comps = pattern.split("/")
        current = [""]
        for i, comp in enumerate(comps):
            nxt: list[str] = []
            for d in current:
                if not has_wildcards(comp):
                    literal = re.sub(r"\\(.)", r"\1", comp)
                    cand = f"{d}/{literal}" if d else literal
                    if self.resolve(cand, follow=False) is not None:
                        nxt.append(cand)
                    continue
                real = self.resolve(d) if d else ""
                if real is None:
                    continue
                try:
                    names = sorted(os.listdir(self._abs(real)))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                rx = component_regex(comp)
                nxt.extend(f"{d}/{n}" if d else n for n in names if rx.match(n))
            current = nxt
        out = []
        for rel in current:
            e = self.lookup(rel, follow=True)
            if e is not None:
                out.append(e)
        return out

    # -- hashing -----------------------------------------------------------------
    def file_digest(self, e: Entry) -> str:
        return self.hashes.digest(e.abs, e.st, self._root)

    def hash_all(self, entries: list[Entry]) -> None:
        """The digests of these entries' files, read side by side where not known."""
        self.hashes.digest_all([(e.abs, e.st) for e in entries if e.is_file], self._root)


def tree_records(ctx: Context, top: Entry, name: str, children: list[Entry] | None = None) -> Iterable[str]:
    """Cache-key records for a source: its type, mode and content (or link
    target), and the same for everything under it; mtime and owner are left
    out (COPY from the context writes uid/gid 0 unless --chown says otherwise)."""
    def record(e: Entry, rel: str) -> str:
        mode = stat.S_IMODE(e.st.st_mode)
        if e.is_dir:
            return f"d {mode:o} {rel}"
        if e.is_symlink:
            return f"l {mode:o} {rel} -> {os.readlink(e.abs)}"
        if e.is_file:
            return f"f {mode:o} {rel} {ctx.file_digest(e)}"
        return f"o {stat.S_IFMT(e.st.st_mode):o} {mode:o} {rel}"

    yield record(top, name)
    if top.is_dir:
        cut = len(top.rel) + 1 if top.rel else 0
        for e in (children if children is not None else ctx.walk(top.rel)):
            yield record(e, f"{name}/{e.rel[cut:]}" if name else e.rel[cut:])
