"""The differential harness: one Dockerfile and context, built by soko and by Docker Engine's BuildKit,
compared as file trees and as configs (tests/interop/test_build_parity.py holds the cases).

Both builds start from the very same base image: Docker's `busybox:local` saved and loaded into the
soko store. Docker's result comes back the same way (`docker save` -> soko load), and both images
are read through soko's layer view. Compared per path: type, permission bits, owner, content digest,
link target, device numbers, xattrs (overlay's own left out), and the mtime wherever Docker's is
older than the build (it came from an input: the base, the context; a file a RUN made has the time
it ran). Compared in the config: the runtime fields and the history (created_by, empty_layer).
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
                 "StopSignal", "Healthcheck", "Shell", "OnBuild")
OLD = 1_600_000_000  # context files' mtime: an input, so Docker's tree keeps it (and soko must)


@dataclass
class Case:
    name: str
    dockerfile: str
    files: dict[str, object] = field(default_factory=dict)  # path -> text | bytes | Link | Mode | Dir
    args: tuple[str, ...] = ()            # extra build flags for both (--build-arg ..., --target ...)
    skip: tuple[str, ...] = ()            # paths not compared (documented per case)
    deliberate: dict[str, str] = field(default_factory=dict)  # path or config field -> why soko differs

    def __str__(self) -> str:
        return self.name


@dataclass
class Link:
    target: str


@dataclass
class Mode:
    content: str | bytes
    mode: int
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Dir:
    mode: int = 0o755


@dataclass
class HardLink:
    to: str


def write_context(root: Path, files: dict[str, object]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, what in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Link):
            os.symlink(what.target, p)
        elif isinstance(what, HardLink):
            os.link(root / what.to, p)
        elif isinstance(what, Dir):
            p.mkdir(exist_ok=True)
            os.chmod(p, what.mode)
        elif isinstance(what, Mode):
            p.write_bytes(what.content.encode() if isinstance(what.content, str) else what.content)
            os.chmod(p, what.mode)
            for k, v in what.xattrs.items():
                os.setxattr(p, k, v)
        else:
            p.write_bytes(what.encode() if isinstance(what, str) else what)  # type: ignore[union-attr]
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (OLD, OLD), follow_symlinks=False)
    os.utime(root, (OLD, OLD))
    return root


def tree(store, ref: str) -> dict[str, tuple]:
    """path -> (kind, mode, uid, gid, what, rdev, xattrs, mtime seconds, host path)."""
    from runtime.build import layer_view

    img = store.resolve(ref)
    view = layer_view(store, list(img.config.diff_ids))
    out: dict[str, tuple] = {}

    def walk(path: str) -> None:
        for name, e in sorted(view.listdir(path).items()):
            p = f"{path.rstrip('/')}/{name}"
            st = e.st
            what: object = None
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(e.host_path).read_bytes()).hexdigest()[:16]
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(e.host_path)
            try:
                names = os.listxattr(e.host_path, follow_symlinks=False)
            except OSError:
                names = []
            xattrs = tuple(sorted((n, os.getxattr(e.host_path, n, follow_symlinks=False)) for n in names
                                  if not n.startswith("trusted.overlay.")))
            rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
            out[p] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, what, rdev,
                      xattrs, int(st.st_mtime), e.host_path)  # the last: for showing a difference, not compared
            if stat.S_ISDIR(st.st_mode):
                walk(p)

    walk("/")
    return out


def _empty(v) -> bool:
    return v in (None, "", [], {})


def config_view(store, ref: str) -> dict:
    data = store.resolve(ref).config.data
    cfg = data.get("config") or {}
    out = {k: (None if _empty(cfg.get(k)) else cfg.get(k)) for k in CONFIG_FIELDS}
    out["author"] = data.get("author") or None
    out["history"] = [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in data.get("history") or []]
    return out


def _shown(entry: tuple) -> tuple:
    """An entry as a difference shows it: a small text file with its content."""
    if entry[0] == stat.S_IFREG and os.path.getsize(entry[8]) < 1024:
        data = Path(entry[8]).read_bytes()
        try:
            return (*entry[:8], data.decode())
        except UnicodeDecodeError:
            pass
    return entry[:8]


def differences(soko_tree: dict, docker_tree: dict, soko_cfg: dict, docker_cfg: dict, started: float,
                skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Everything that differs: path or config field -> (soko's, Docker's)."""
    out: dict[str, tuple] = {}
    for p in sorted(set(soko_tree) | set(docker_tree)):
        if any(p == s or p.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        a, b = soko_tree.get(p), docker_tree.get(p)
        if a is None or b is None:
            out[p] = (a and a[:8], b and b[:8])
            continue
        n = 7 if b[7] >= started else 8  # made during the build (a RUN): its time is when it ran
        if a[:n] != b[:n]:
            out[p] = (_shown(a), _shown(b))
    for k in docker_cfg:
        if soko_cfg.get(k) != docker_cfg.get(k):
            out[f"config.{k}"] = (soko_cfg.get(k), docker_cfg.get(k))
    return out


class Builders:
    """soko and Docker side by side on one store and one private dockerd."""

    def __init__(self, docker, store, tmp: Path):
        self.docker = docker
        self.store = store
        self.tmp = tmp

    def build_both(self, case: Case, ctx: Path) -> dict[str, tuple]:
        from builder import BuildOptions, build
        from storage.archives import load

        args = list(case.args)
        build_args: dict[str, str] = {}
        target = None
        i = 0
        while i < len(args):
            if args[i] == "--build-arg":
                k, _, v = args[i + 1].partition("=")
                build_args[k] = v
                i += 2
            elif args[i] == "--target":
                target = args[i + 1]
                i += 2
            else:
                raise AssertionError(f"unsupported flag {args[i]}")
        started = int(time.time()) - 1
        tag = f"parity-{case.name}"
        build(self.store, BuildOptions(context=ctx, tags=[f"{tag}:soko"], build_args=build_args, target=target,
                                       network="none"))
        self.docker("build", "--no-cache", "--network", "none", *args, "-t", f"{tag}:docker", ctx)
        archive = self.tmp / f"{case.name}.tar"
        self.docker("save", "-o", archive, f"{tag}:docker")
        self.docker("rmi", f"{tag}:docker")
        load(self.store, archive)
        return differences(tree(self.store, f"{tag}:soko"), tree(self.store, f"{tag}:docker"),
                           config_view(self.store, f"{tag}:soko"), config_view(self.store, f"{tag}:docker"),
                           started, case.skip)
