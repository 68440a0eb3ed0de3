"""A fresh layer directory being filled by COPY, ADD or WORKDIR.

Parent directories that exist in the image are mirrored with the image's
own mode, owner and mtime (so `/tmp` stays 1777); missing ones are created
0755 with the step's owner. Directory mtimes are set last, deepest first,
because creating their contents would move them.

A tree may start as a previous result taken whole (reuse.py, `take`): then
`placed` is the set of paths this step has put there, an existing directory
is given its metadata again the first time the step reaches it, and `sweep`
removes everything else.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import BuildError


class Tree:
    def __init__(self, root: Path, view, uid: int = 0, gid: int = 0, taken: bool = False):
        self.root = root
        self.view = view        # layerio.RootView of the image being added to
        self.uid = uid          # owner of directories this step creates
        self.gid = gid
        self._times: dict[str, tuple[int, int]] = {}
        self.placed: set[str] | None = set() if taken else None  # host paths, when the tree was taken

    def place(self, path: Path | str) -> None:
        """`path` is this step's (not a leftover of the taken tree)."""
        if self.placed is not None:
            self.placed.add(str(path))

    def claim(self, path: Path | str) -> None:
        """About to write a file at `path`: a taken tree's directory there (not this step's) is
        removed first. (A leftover file is kept or replaced as any file is: reuse.py.)"""
        if self.placed is not None and str(path) not in self.placed and os.path.isdir(path) \
                and not os.path.islink(path):
            remove(path)

    def host(self, parts: list[str]) -> Path:
        return self.root.joinpath(*parts) if parts else self.root

    def ensure_dir(self, parts: list[str]) -> Path:
        """`mkdir -p` of image path `parts` (symlinks already resolved) in the tree."""
        cur = self.root
        for i, comp in enumerate(parts):
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                st = None
            if st is not None and self.placed is not None and str(cur) not in self.placed:
                if not stat.S_ISDIR(st.st_mode):  # the previous result's, not this step's
                    remove(cur)
                st = None  # a directory is this step's now, with the metadata it gives a new one
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    raise BuildError(f"/{'/'.join(parts[:i + 1])} is not a directory")
                continue
            below = self.view.lstat("/" + "/".join(parts[:i + 1])) if self.view is not None else None
            if below is not None and stat.S_ISDIR(below.st_mode):
                self.make_dir(cur, stat.S_IMODE(below.st_mode), below.st_uid, below.st_gid, below.st_mtime_ns)
            elif below is not None:
                raise BuildError(f"cannot create directory /{'/'.join(parts[:i + 1])}: "
                                 "a file of that name exists in the image")
            else:
                self.make_dir(cur, 0o755, self.uid, self.gid, None)
        return cur

    def make_dir(self, path: Path | str, mode: int, uid: int, gid: int, mtime_ns: int | None) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                remove(path)
                os.mkdir(path, 0o700)
        chown(path, uid, gid)
        os.chmod(path, mode)
        if mtime_ns is not None:
            self._times[str(path)] = (mtime_ns, mtime_ns)
        else:
            self._times.pop(str(path), None)
            if self.placed is not None and str(path) not in self.placed:
                os.utime(path)  # as if made now, as a fresh tree's would be
        self.place(path)

    def sweep(self) -> None:
        """Remove what a taken tree holds that this step did not place (before `finish`)."""
        if self.placed is None:
            return
        placed = self.placed
        stack = [str(self.root)]
        while stack:
            top = stack.pop()
            with os.scandir(top) as it:
                for e in it:
                    if e.path not in placed:
                        remove(e.path)
                    elif e.is_dir(follow_symlinks=False):
                        stack.append(e.path)

    def set_times(self, path: Path | str, mtime_ns: int) -> None:
        """Remember a directory's mtime, applied by `finish` after its contents exist."""
        self._times[str(path)] = (mtime_ns, mtime_ns)

    def finish(self) -> None:
        for path in sorted(self._times, key=lambda p: p.count("/"), reverse=True):  # deepest first
            if os.path.isdir(path) and not os.path.islink(path):
                os.utime(path, ns=self._times[path], follow_symlinks=False)


def remove(path: Path | str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def chown(path: Path | str, uid: int, gid: int) -> None:
    try:
        os.lchown(path, uid, gid)
    except PermissionError:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            raise BuildError(f"cannot set owner {uid}:{gid} (building as non-root)") from None
