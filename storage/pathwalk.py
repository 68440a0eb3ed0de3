"""The one symlink-resolving path walk, for every tree soko looks into.

Image paths are hostile input: `/etc/passwd`, a COPY destination, a mount
target or a layer entry's parent may be a symlink to `/`, to `../../..`, to
itself. Every lookup of such a path goes through `walk`, which resolves it
the way Linux resolves a path for a process whose root is the tree:

- an absolute symlink target restarts at the root;
- at most 40 symlinks are followed in one lookup, counting every component
  (ELOOP past that, as Linux's MAXSYMLINKS); `links=` carries a count over
  when a caller resumes a walk from a cached prefix;
- a non-directory with more path after it blocks the walk (ENOTDIR);
- `..` above the root is clamped there (CLAMP, the kernel's rule inside a
  chroot or a container) or refused (REFUSE, `PathEscape`).

What a caller chooses is the tree (how to lstat and readlink a real path:
`DirTree` for a host directory, `OverlayTree` for unpacked layers with
whiteouts, `layers_paths.Resolver` for the directory fds of a layer being
applied), the `..` policy, whether the last symlink is followed, and whether
missing directories are made on the way (`create`, the layer applier).

A missing component does not end the walk: the rest is kept as `mkdir -p`
would make it (names appended, `..` dropping the last missing one), and once
a `..` leads back onto existing ground, symlinks are resolved again. So
`Walked.parts` always names the place inside the root the path leads to,
never a path through an unresolved symlink or with a `..` left in it.

The four walks this replaces, how they differed, and the rule each caller keeps:

- runtime.paths.secure_join (host dir; mount targets, the working directory,
  volume copy-up): clamped `..` (right: the container's own view). After a
  missing component it went on lexically, so `/none/../link/x` named a path
  through the unresolved `link`; it raised ENOTDIR only when an lstat below a
  file failed (`file/..` passed). Now: resolves again after `..`, ENOTDIR as
  the kernel.
- runtime.layerview.LayerView (overlay; USER lookups, build-step mount stubs,
  the builder's COPY/ADD/WORKDIR targets and --from sources): clamped `..`
  (right: BuildKit resolves in the image the same way), but on a missing
  component returned the rest raw, a symlink target's `..` included: COPY and
  WORKDIR through an image's dangling `/x/../../..` link wrote on the host,
  and the stub cleaner deleted host files. The root itself was "not found"
  (COPY --from=stage / failed). Now: `mkdir -p` semantics, the root found.
- builder.context.Context (host dir; COPY/ADD sources): clamped `..` (right:
  BuildKit resolves in the context it received, root as `/`); a missing
  component meant None (kept); a name longer than NAME_MAX raised a raw
  OSError (now: not found).
- storage.layers_paths.Resolver (dir fds; applying a layer): refused `..`
  above the root (kept: no image needs a symlink out of its root under a
  later entry, escaping is its only use; Docker's chrooted applier clamps),
  made missing directories (kept), but counted links per nesting depth, so a
  path could pass 40 links over several components (now: 40 per lookup).
"""
from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass
from typing import Generic, Protocol, Sequence, TypeVar

from .errors import PathEscape, SymlinkLoop

MAX_SYMLINKS = 40
OPAQUE_XATTR = "trusted.overlay.opaque"

Parts = tuple[str, ...]


class DotDot(enum.Enum):
    CLAMP = "clamp"    # `..` at the root stays at the root (the kernel in a chroot)
    REFUSE = "refuse"  # `..` at the root is an error (PathEscape)


CLAMP = DotDot.CLAMP
REFUSE = DotDot.REFUSE


class Node(Protocol):
    @property
    def st_mode(self) -> int: ...


N = TypeVar("N", bound=Node)


class Tree(Protocol[N]):
    """How to look at one tree. `parts` is always a real path: no symlink in its parents."""

    def lstat(self, parts: Parts) -> N | None:
        """The entry at `parts` (the root for `()`), not followed; None when absent."""

    def readlink(self, parts: Parts, node: N) -> str: ...

    def mkdir(self, parts: Parts) -> N:
        """Make a missing directory (only trees walked with `create=True`)."""


@dataclass(frozen=True)
class Walked(Generic[N]):
    """Where a path leads. `node` is None when something on the way is missing
    (`parts` then names where it would be) or blocked by a non-directory."""
    parts: Parts
    node: N | None
    exists: int            # leading components of `parts` that exist
    notdir: bool = False   # a non-directory stood where the path needed a directory
    links: int = 0         # symlinks followed, `links=` included

    @property
    def missing(self) -> bool:
        return self.node is None and not self.notdir


def split(path: str) -> list[str]:
    """Components of a path: empty ones and `.` dropped, `..` kept."""
    return [c for c in path.split("/") if c and c != "."]


def walk(tree: Tree[N], path: str | Sequence[str], *, dotdot: DotDot = CLAMP, follow_last: bool = True,
         start: Parts = (), links: int = 0, create: bool = False) -> Walked[N]:
    """Resolve `path` in `tree`, from the real directory `start` (the root by default)."""
    shown = path if isinstance(path, str) else "/".join(path)
    todo = split(path) if isinstance(path, str) else [c for c in path if c and c != "."]
    todo.reverse()
    done = list(start)
    virtual = 0        # trailing components of `done` that do not exist (or sit behind a non-directory)
    notdir = False
    node: N | None = None
    known = False      # `node` is the entry at `done` (else it is looked up at the end)
    via: str | None = None
    while todo:
        name = todo.pop()
        if name == "..":
            if done:
                done.pop()
                virtual = max(virtual - 1, 0)
            elif dotdot is REFUSE:
                raise PathEscape(shown, via)
            known = False
            continue
        if virtual:
            done.append(name)
            virtual += 1
            continue
        here = (*done, name)
        found = tree.lstat(here)
        if found is None:
            done.append(name)
            virtual = 1
            continue
        if stat.S_ISLNK(found.st_mode) and (todo or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise SymlinkLoop(f"{shown!r}: too many levels of symbolic links")
            via = tree.readlink(here, found)
            if via.startswith("/"):
                done = []
            todo.extend(reversed(split(via)))
            known = False
            continue
        done.append(name)
        if todo and not stat.S_ISDIR(found.st_mode):
            notdir = True
            virtual = 1
            continue
        node, known = found, True
    if virtual and create and not notdir:  # mkdir -p of where the path leads, nothing a `..` left
        for i in range(len(done) - virtual, len(done)):
            node = tree.mkdir(tuple(done[:i + 1]))
        virtual, known = 0, True
    if virtual or notdir:
        return Walked(tuple(done), None, len(done) - virtual, notdir, links)
    if not known:
        node = tree.lstat(tuple(done))
    return Walked(tuple(done), node, len(done), False, links)


class DirTree:
    """A host directory seen as `/` (a container's root, a build context)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root).rstrip("/") or "/"

    def host(self, parts: Sequence[str]) -> str:
        return os.path.join(self.root, *parts) if parts else self.root

    def lstat(self, parts: Parts) -> os.stat_result | None:
        try:
            return os.lstat(self.host(parts))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                return None  # no such entry can exist there
            raise

    def readlink(self, parts: Parts, node: os.stat_result) -> str:
        return os.readlink(self.host(parts))

    def mkdir(self, parts: Parts) -> os.stat_result:
        raise NotImplementedError("DirTree walks do not create directories")


# -- unpacked layers in overlay form ------------------------------------------------
def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


@dataclass
class Entry:
    """A visible entry of a merged tree: the host file that provides it."""
    host_path: str
    st: os.stat_result

    @property
    def st_mode(self) -> int:
        return self.st.st_mode


class OverlayTree:
    """Unpacked layer directories, top first, merged by overlayfs' rules: a whiteout
    (a 0/0 character device) hides what is below it, an opaque directory
    (trusted.overlay.opaque=y) hides the directories below it, a non-directory
    hides everything below it."""

    def __init__(self, layers_top_first: Sequence[str | os.PathLike]):
        self.layers = [os.fspath(p) for p in layers_top_first]

    @staticmethod
    def _merge(candidates: list[str], rel: str) -> tuple[Entry | None, list[str]]:
        """The topmost visible entry at `rel` among `candidates`, and the layers
        whose directory at `rel` is part of the merged directory there."""
        found: Entry | None = None
        below: list[str] = []
        for layer in candidates:
            host = os.path.join(layer, rel)
            try:
                st = os.lstat(host)
            except OSError:
                continue
            if is_whiteout(st):
                break
            if found is None:
                found = Entry(host, st)
            if not stat.S_ISDIR(st.st_mode):
                break
            below.append(layer)
            if is_opaque(host):
                break
        return found, below

    def lstat(self, parts: Parts) -> Entry | None:
        if not parts:
            return Entry(self.layers[0], os.lstat(self.layers[0])) if self.layers else None
        candidates = self.layers  # layers where the current directory is a merged directory
        found: Entry | None = None
        for i in range(len(parts)):
            found, candidates = self._merge(candidates, os.path.join(*parts[:i + 1]))
            if found is None or (i < len(parts) - 1 and not stat.S_ISDIR(found.st.st_mode)):
                return None
        return found

    def readlink(self, parts: Parts, node: Entry) -> str:
        return os.readlink(node.host_path)

    def mkdir(self, parts: Parts) -> Entry:
        raise NotImplementedError("layer snapshots are read-only")

    def dir_layers(self, parts: Sequence[str]) -> list[str]:
        """Host directories that make up the merged directory at real path `parts`, top first."""
        candidates = self.layers
        for i in range(len(parts)):
            _, candidates = self._merge(candidates, os.path.join(*parts[:i + 1]))
            if not candidates:
                return []
        rel = os.path.join(*parts) if parts else ""
        return [os.path.join(layer, rel) for layer in candidates]

    def listdir(self, parts: Sequence[str]) -> dict[str, Entry]:
        """Visible entries of the merged directory at real path `parts`."""
        out: dict[str, Entry] = {}
        hidden: set[str] = set()
        for d in self.dir_layers(parts):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n in out or n in hidden:
                    continue
                host = os.path.join(d, n)
                st = os.lstat(host)
                if is_whiteout(st):
                    hidden.add(n)
                else:
                    out[n] = Entry(host, st)
        return out
