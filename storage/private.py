"""Private directories: what soko keeps on disk is its owner's alone.

Image layers carry setuid files and world-writable device nodes; a store that
other host users can traverse hands those to them (`<root>/snapshots/...`).
So the store root and every directory soko makes in it are 0700, as
containerd keeps its roots (no container's user needs to traverse them: both
executors mount as root before switching user, and overlayfs looks up its
layers with the mounter's credentials).

Directories are made 0700 by mkdir itself, never chmod-ed down afterwards
(no window in which another user can open them). umask only removes bits;
the owner's, if it removed those, are put back. A store made before this was
the rule is tightened when it is opened.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o700


def private_dir(path: str | os.PathLike) -> Path:
    """`mkdir -p path`, every directory it creates 0700 from the start; returns `path`.

    Directories that exist already are left as they are (see `open_root`)."""
    p = Path(path)
    missing = []
    cur = p
    while not cur.is_dir():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another process: its maker chose the mode
        if stat.S_IMODE(os.lstat(d).st_mode) != PRIVATE:
            os.chmod(d, PRIVATE)  # the umask took owner bits: others never had any
    return p


def open_root(path: str | os.PathLike) -> Path:
    """The root directory of a store (the local one, or a registry's): made
    private when new; when it is a soko store already (or empty), group and
    other access is removed from it and from the directories directly in it.

    Another directory (`--root ~` the first time) keeps its mode, and so does
    a sticky one (`--root /tmp`): everything soko creates in them is private
    anyway."""
    p = Path(path)
    if not p.is_dir():
        return private_dir(p)
    st = os.stat(p)
    if st.st_mode & 0o077 and not st.st_mode & stat.S_ISVTX and _is_store_or_empty(p):
        os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o077)
        with os.scandir(p) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    mode = stat.S_IMODE(e.stat(follow_symlinks=False).st_mode)
                    if mode & 0o077:
                        os.chmod(e.path, mode & ~0o077)
    return p


def _is_store_or_empty(p: Path) -> bool:
    if (p / "metadata.db").is_file() or (p / "oci-layout").is_file():
        return True
    with os.scandir(p) as entries:
        return next(entries, None) is None
