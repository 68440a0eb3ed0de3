"""Read files from a stack of unpacked layers without mounting them.

The layers are snapshot directories in overlayfs form (a whiteout is a 0/0
character device, an opaque directory carries trusted.overlay.opaque=y), top
first. Lookups follow overlayfs' merge rules and resolve symlinks as if the
merged tree were `/`, so a hostile image cannot make us read host files.
Used to resolve USER from /etc/passwd before a container exists, and by the
builder for COPY --chown.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import UnsafePath
from .paths import MAX_SYMLINKS

OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


@dataclass
class Entry:
    host_path: str
    st: os.stat_result


class LayerView:
    def __init__(self, layers_top_first: list[str]):
        self.layers = [str(p) for p in layers_top_first]

    def _lookup(self, parts: list[str]) -> Entry | None:
        """The topmost visible entry at `parts` (no symlink following)."""
        candidates = list(self.layers)  # layers where the current directory exists as a dir
        entry: Entry | None = None
        rel = ""
        for i, name in enumerate(parts):
            rel = os.path.join(rel, name)
            found: Entry | None = None
            nxt: list[str] = []
            for layer in candidates:
                host = os.path.join(layer, rel)
                try:
                    st = os.lstat(host)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if is_whiteout(st):
                    break
                if found is None:
                    found = Entry(host, st)
                    if not stat.S_ISDIR(st.st_mode):
                        break
                elif not stat.S_ISDIR(st.st_mode):
                    break
                nxt.append(layer)
                if is_opaque(host):
                    break
            if found is None:
                return None
            entry = found
            candidates = nxt
            if not stat.S_ISDIR(found.st.st_mode) and i < len(parts) - 1:
                return entry  # caller sees a non-directory in the middle
        return entry

    def resolve(self, path: str, follow_last: bool = True) -> tuple[list[str], Entry | None]:
        """Components of `path` with symlinks resolved inside the view, and its entry."""
        todo = [c for c in path.split("/") if c and c != "."]
        todo.reverse()
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if done:
                    done.pop()
                continue
            e = self._lookup(done + [name])
            if e is None:
                return done + [name] + list(reversed(todo)), None
            if stat.S_ISLNK(e.st.st_mode) and (todo or follow_last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafePath(f"{path!r}: too many levels of symbolic links")
                target = os.readlink(e.host_path)
                if target.startswith("/"):
                    done = []
                parts = [c for c in target.split("/") if c and c != "."]
                parts.reverse()
                todo.extend(parts)
                continue
            if todo and not stat.S_ISDIR(e.st.st_mode):
                return done + [name] + list(reversed(todo)), None
            done.append(name)
        return done, (self._lookup(done) if done else None)

    def stat(self, path: str) -> os.stat_result | None:
        _, e = self.resolve(path)
        return e.st if e else None

    def read_file(self, path: str, limit: int = 16 << 20) -> bytes | None:
        """Contents of the regular file at `path` in the merged tree, or None."""
        _, e = self.resolve(path)
        if e is None or not stat.S_ISREG(e.st.st_mode):
            return None
        fd = os.open(e.host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePath(f"{path}: larger than {limit} bytes")
        return data

    def dir_layers(self, path: str) -> list[str]:
        """Host directories that make up the merged directory at `path` (no symlinks followed), top first."""
        parts = [c for c in path.split("/") if c and c != "."]
        candidates = list(self.layers)
        rel = ""
        for name in parts:
            rel = os.path.join(rel, name)
            nxt: list[str] = []
            for layer in candidates:
                host = os.path.join(layer, rel)
                try:
                    st = os.lstat(host)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    break
                nxt.append(layer)
                if is_opaque(host):
                    break
            candidates = nxt
            if not candidates:
                return []
        return [os.path.join(layer, rel) for layer in candidates]

    def listdir(self, path: str) -> dict[str, Entry]:
        """Visible entries of the merged directory at `path` (no symlinks followed)."""
        out: dict[str, Entry] = {}
        hidden: set[str] = set()
        for d in self.dir_layers(path):
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
