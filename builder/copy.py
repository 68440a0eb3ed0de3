"""COPY and ADD: sources resolved, hashed for the cache key, written as a fresh layer.

Sources come from the build context (through .dockerignore), from another
stage or image (`--from`, looked up in its layers without mounting), from a
heredoc, or for ADD from a URL. Rules, as Docker documents them:
- a directory source copies its contents, not itself;
- a file goes to `dest` itself, unless `dest` ends with `/` (or is `.`), or
  is a directory in the image, or there are several sources: then into it;
- several sources need a directory destination ending in `/`;
- wildcards match per path component (Go's filepath.Match);
- from the context, files get uid/gid 0 (or --chown); from a stage or image
  they keep their owners; modes are kept unless --chmod;
- destination paths follow the image's symlinks (`/var/run/x` lands in `/run/x`);
- ADD unpacks local tar archives and downloads URLs (file mode 0600).
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from storage.errors import ImageNotFound, StorageError

from . import add as addmod
from . import cache as cachemod
from . import layerio
from .context import clean_source, component_regex, has_wildcards, tree_records
from .errors import BuildError, DockerfileError, ExpansionError, StepError
from .instructions import Copy
from .perms import Chmod, resolve_chown
from .reuse import Reuse
from .tree import Tree, chown, remove

Walk = Callable[[], Iterator[tuple[str, Path, os.stat_result]]]


@dataclass
class Item:
    """One top-level source."""
    name: str                      # its name when copied into a directory
    host: Path | None              # where its bytes are (None: data)
    st: os.stat_result | None
    data: bytes | None = None
    walk: Walk | None = None       # a directory's contents: (relative path, host path, lstat)
    keep_owner: bool = False       # --from keeps uid/gid; the context does not
    archive: bool = False          # ADD: unpack into the destination
    records: list[str] = field(default_factory=list)
    mtime: int | None = None       # override (URL Last-Modified, heredocs)
    hash_root: Path | None = None  # where its files' digests are remembered (see HashCache)

    @property
    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)


def resolve_owner(view, spec: str, cmd, filename: str) -> tuple[int, int]:
    try:
        return resolve_chown(spec, view.read_file)
    except BuildError as e:
        raise StepError(str(e), cmd.line, filename) from None


def job(exe, state, stage, cmd: Copy):
    from .executor import Job

    fname = exe.plan.filename
    err = lambda msg: StepError(msg, cmd.line, fname)  # noqa: E731
    vars_ = state.vars()

    def word(text: str) -> str:
        try:
            return state.lexer.word(text, vars_)
        except ExpansionError as e:
            raise DockerfileError(str(e), cmd.line, fname) from None

    what = cmd.cmd
    dest = word(cmd.dest)
    chown_spec = word(cmd.chown) if cmd.chown else None
    chmod_spec = word(cmd.chmod) if cmd.chmod else None
    chmod = None
    if chmod_spec:
        try:
            chmod = Chmod(chmod_spec)
        except BuildError as e:
            raise DockerfileError(str(e), cmd.line, fname) from None
    heredocs = {h.name: h for h in cmd.heredocs}
    if not dest:
        raise DockerfileError(f"{what}: empty destination", cmd.line, fname)
    dest_is_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith(("/.", "/.."))
    dest_abs = dest if dest.startswith("/") else posixpath.join(state.workdir(), dest)
    dest_abs = posixpath.normpath(dest_abs)
    if dest_abs.startswith("//"):
        dest_abs = "/" + dest_abs.lstrip("/")

    # -- where the sources come from --------------------------------------------
    from_view = None
    from_label = None
    if cmd.from_:
        ref = word(cmd.from_)
        dep = exe.plan.lookup(ref, before=stage.index)
        if dep is not None:
            src_state = exe.stage_result(dep)
            from_view = layerio.RootView(exe.store, src_state.config.diff_ids)
            from_label = f"stage:{dep.index}"
        else:
            try:
                image = exe.store.resolve(ref, exe.platform)
            except (ImageNotFound, StorageError) as e:
                raise DockerfileError(f"{what} --from={ref}: not a stage of this Dockerfile, and {e}",
                                      cmd.line, fname) from None
            from_view = layerio.RootView(exe.store, image.config.diff_ids)
            from_label = image.manifest.digest

    items: list[Item] = []
    shown: list[str] = []
    downloads: list[Path] = []
    for raw in cmd.sources:
        h = _heredoc_of(raw, heredocs)
        if h is not None:
            text = h.text()
            if h.expand:
                try:
                    text = state.lexer.heredoc(text, vars_).value
                except ExpansionError as e:
                    raise DockerfileError(str(e), cmd.line, fname) from None
            data = text.encode()
            items.append(Item(h.name, None, None, data=data, mtime=exe.epoch,
                              records=[f"h {h.name} {hashlib.sha256(data).hexdigest()}"]))
            shown.append(f"<<{h.name}")
            continue
        src = word(raw)
        shown.append(src)
        if cmd.is_add and addmod.is_url(src) and from_view is None:
            items.append(_url_item(exe, src, cmd, dest_is_dir, downloads))
            continue
        if cmd.is_add and addmod.is_git(src) and from_view is None:
            raise err(f"ADD of a git repository ({src}) is not supported by soko yet")
        if from_view is not None:
            found = _view_sources(exe, from_view, src)
        else:
            found = _context_sources(exe, src, cmd.is_add and cmd.unpack is not False)
        if not found:
            where = "in stage or image" if from_view is not None else "in build context or excluded by .dockerignore"
            raise err(f"{what} failed: file not found {where}: stat {src}: file does not exist")
        items.extend(found)
    if len(items) > 1 and not dest_is_dir:
        raise err(f"When using {what} with more than one source file, the destination must be a directory "
                  "and end with a /")
    exe.hashes.flush()

    records = [r for i in items for r in i.records]
    spec = {"cmd": what, "dest": dest_abs, "dest_dir": dest_is_dir, "chown": chown_spec, "chmod": chmod_spec,
            "from": from_label, "unpack": cmd.unpack}
    key = cachemod.key(state.key, copy=spec, sources=hashlib.sha256("\n".join(records).encode()).hexdigest(),
                       **exe._key_extra())
    family = cachemod.key(state.key, copy=spec, **exe._key_extra())
    created_by = f"{what} {' '.join(shown)} {dest}"
    diff_ids = list(state.config.diff_ids)

    def produce():
        try:
            view = layerio.RootView(exe.store, diff_ids)
            uid, gid = resolve_owner(view, chown_spec, cmd, fname) if chown_spec else (0, 0)
            reuse = Reuse(exe.store, exe.hashes, family)
            with exe.staging() as root:
                tree = Tree(root, view, uid, gid)
                placer = _Placer(tree, exe.hashes, reuse, chmod)
                _place_all(placer, view, items, dest_abs, dest_is_dir, chown_spec is not None, uid, gid)
                tree.finish()
                layer = layerio.write_dir(exe.store, root, exe.opts.storage_compression, exe.epoch)
                chain = [*diff_ids, layer.diff_id]
                if layerio.adopt(exe.store, chain, root):
                    reuse.remember(layerio.chain_id(chain))
                return layer
        except BuildError as e:
            if isinstance(e, (StepError, DockerfileError)):
                raise
            raise err(str(e)) from None
        finally:
            for p in downloads:
                p.unlink(missing_ok=True)

    return Job(key, created_by, produce)


def _heredoc_of(raw: str, heredocs: dict):
    if not heredocs or not raw.startswith("<<"):
        return None
    name = raw.lstrip("<").lstrip("-").strip("'\"")
    return heredocs.get(name)


# -- the build context ------------------------------------------------------------
def _context_sources(exe, src: str, unpack: bool) -> list[Item]:
    ctx = exe.context
    rel = clean_source(src)
    entries = ctx.glob(rel) if has_wildcards(rel) else [e for e in [ctx.lookup(rel)] if e is not None]
    out = []
    for e in entries:
        name = e.name
        item = Item(name, e.path, e.st, hash_root=ctx.root)
        children = None
        if e.is_dir:
            cut = len(e.rel) + 1 if e.rel else 0
            children = list(ctx.walk(e.rel))  # walked once: for the key, then for the copy
            item.walk = (lambda children=children, cut=cut: ((c.rel[cut:], c.path, c.st) for c in children))
        elif unpack and e.is_file and addmod.is_archive(e.path):
            item.archive = True
        item.records = [f"src ctx {e.rel or '.'}", *tree_records(ctx, e, name, children)]
        if item.archive:
            item.records.append("unpack")
        out.append(item)
    return out


# -- another stage or an image ----------------------------------------------------
def _view_sources(exe, view, src: str) -> list[Item]:
    path = "/" + clean_source(src)
    if has_wildcards(path):
        paths = _view_glob(view, path)
    else:
        paths = [path]
    out = []
    for p in paths:
        found = view.host_path(p, follow_last=True)
        if found is None:
            continue
        host, st = found
        name = posixpath.basename(p.rstrip("/"))
        item = Item(name, Path(host), st, keep_owner=True, hash_root=Path(exe.store.root) / "snapshots")
        if stat.S_ISDIR(st.st_mode):
            resolved = "/" + "/".join(view.resolve(p)[0])
            item.walk = (lambda r=resolved: _view_walk(view, r))
        item.records = [f"src view {p}", *_view_records(exe, item, name)]
        out.append(item)
    return out


def _view_glob(view, pattern: str) -> list[str]:
    current = ["/"]
    for comp in [c for c in pattern.split("/") if c]:
        nxt = []
        for d in current:
            if not has_wildcards(comp):
                cand = posixpath.join(d, comp)
                if view.host_path(cand, follow_last=False) is not None:
                    nxt.append(cand)
                continue
            rx = component_regex(comp)
            nxt.extend(posixpath.join(d, n) for n in view.listdir(d) if rx.match(n))
        current = nxt
    return sorted(current)


def _view_walk(view, top: str) -> Iterator[tuple[str, Path, os.stat_result]]:
    def rec(path: str, rel: str):
        for name in view.listdir(path):
            child = posixpath.join(path, name)
            found = view.host_path(child, follow_last=False)
            if found is None:
                continue
            host, st = found
            crel = f"{rel}/{name}" if rel else name
            yield crel, Path(host), st
            if stat.S_ISDIR(st.st_mode):
                yield from rec(child, crel)

    yield from rec(top, "")


def _view_records(exe, item: Item, name: str) -> list[str]:
    hashes = exe.hashes
    root = Path(exe.store.root) / "snapshots"

    def rec(rel: str, host: Path, st: os.stat_result) -> str:
        mode = stat.S_IMODE(st.st_mode)
        own = f"{st.st_uid}:{st.st_gid}"
        if stat.S_ISDIR(st.st_mode):
            return f"d {mode:o} {own} {rel}"
        if stat.S_ISLNK(st.st_mode):
            return f"l {mode:o} {own} {rel} -> {os.readlink(host)}"
        if stat.S_ISREG(st.st_mode):
            return f"f {mode:o} {own} {rel} {hashes.digest(host, st, root)}"
        return f"o {stat.S_IFMT(st.st_mode):o} {mode:o} {own} {rel} {st.st_rdev}"

    out = [rec(name, item.host, item.st)]  # type: ignore[arg-type]
    if item.walk is not None:
        out.extend(rec(f"{name}/{r}", h, s) for r, h, s in item.walk())
    return out


# -- ADD <url> ---------------------------------------------------------------------
def _url_item(exe, url: str, cmd: Copy, dest_is_dir: bool, downloads: list[Path]) -> Item:
    exe._sweep_tmp()
    tmp = Path(exe.tmp_root) / f"download-{os.getpid()}-{len(downloads)}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    downloads.append(tmp)
    checksum = exe.lexer.word(cmd.checksum, {}) if cmd.checksum else None
    d = addmod.fetch(url, tmp, checksum)
    if dest_is_dir and not d.name:
        raise StepError(f"ADD {url}: cannot determine a file name from the URL; give a destination file",
                        cmd.line, exe.plan.filename)
    st = os.lstat(tmp)
    item = Item(d.name or "download", tmp, st, mtime=d.mtime if d.mtime is not None else exe.epoch,
                records=[f"url {url} {d.digest}"])
    item.st = _with_mode(st, 0o600)
    if cmd.unpack and addmod.is_archive(tmp):
        item.archive = True
        item.records.append("unpack")
    return item


def _with_mode(st: os.stat_result, mode: int) -> os.stat_result:
    fields = list(st)
    fields[0] = stat.S_IFMT(st.st_mode) | mode
    return os.stat_result(fields)


# -- writing the layer tree ----------------------------------------------------------
def _place_all(placer: "_Placer", view, items: list[Item], dest: str, dest_is_dir: bool, chowned: bool,
               uid: int, gid: int) -> None:
    tree, chmod = placer.tree, placer.chmod
    parts, entry = view.resolve(dest)
    dest_exists_dir = entry is not None and stat.S_ISDIR(entry.st.st_mode)
    into_dir = dest_is_dir or dest_exists_dir or len(items) > 1

    def owner(st: os.stat_result | None, keep: bool) -> tuple[int, int]:
        if chowned or st is None or not keep:
            return uid, gid
        return st.st_uid, st.st_gid

    for item in items:
        if item.is_dir or item.archive:
            if entry is not None and not dest_exists_dir:
                raise BuildError(f"cannot copy a directory to {dest}: it is a file in the image")
            target = tree.ensure_dir(parts)
            if item.archive:
                addmod.unpack(item.host, target)  # type: ignore[arg-type]
                continue
            for rel, host, st in item.walk() if item.walk else ():
                o_uid, o_gid = owner(st, item.keep_owner)
                placer.place(target / rel, host, st, o_uid, o_gid, None, item.hash_root)
            continue
        file_parts = parts + [item.name] if into_dir else parts
        if not file_parts:
            raise BuildError(f"cannot copy a file to {dest}")
        tree.ensure_dir(file_parts[:-1])
        target = tree.host(file_parts)
        if target.is_dir() and not target.is_symlink():
            raise BuildError(f"cannot copy file to /{'/'.join(file_parts)}: it is a directory")
        below = view.lstat("/" + "/".join(file_parts))
        if into_dir is False and below is not None and stat.S_ISDIR(below.st_mode):
            raise BuildError(f"cannot copy file to /{'/'.join(file_parts)}: it is a directory in the image")
        o_uid, o_gid = owner(item.st, item.keep_owner)
        if item.data is not None:
            _write_data(target, item.data, chmod.apply(0o644, False) if chmod else 0o644, o_uid, o_gid, item.mtime)
        else:
            placer.place(target, item.host, item.st, o_uid, o_gid, item.mtime, item.hash_root)  # type: ignore[arg-type]


def _write_data(path: Path, data: bytes, mode: int, uid: int, gid: int, mtime: int | None) -> None:
    if path.exists() or path.is_symlink():
        remove(path)
    path.write_bytes(data)
    chown(path, uid, gid)
    os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


class _Placer:
    """Writes entries into the tree: hard links from the previous result when
    possible (see reuse.py), else new files copied through descriptors."""

    def __init__(self, tree: Tree, hashes, reuse: Reuse, chmod: Chmod | None):
        self.tree = tree
        self.hashes = hashes
        self.reuse = reuse
        self.chmod = chmod

    def place(self, path: Path, host: Path, st: os.stat_result, uid: int, gid: int, mtime: int | None,
              hash_root: Path | None) -> None:
        mode = stat.S_IMODE(st.st_mode)
        kind = stat.S_IFMT(st.st_mode)
        if self.chmod is not None:
            mode = self.chmod.apply(mode, kind == stat.S_IFDIR)
        mtime_ns = mtime * 1_000_000_000 if mtime is not None else st.st_mtime_ns
        if kind == stat.S_IFDIR:
            self.tree.make_dir(path, mode, uid, gid, mtime_ns)
            return
        if kind == stat.S_IFREG:
            self._file(path, host, st, mode, uid, gid, mtime_ns, hash_root)
            return
        if path.exists() or path.is_symlink():
            remove(path)
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(host), path)
            chown(path, uid, gid)
        elif kind == stat.S_IFIFO:
            os.mkfifo(path, mode)
            chown(path, uid, gid)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            os.mknod(path, kind | mode, st.st_rdev)
            chown(path, uid, gid)
        else:
            return  # sockets cannot be copied
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _file(self, path: Path, host: Path, st: os.stat_result, mode: int, uid: int, gid: int, mtime_ns: int,
              hash_root: Path | None) -> None:
        digest = self.hashes.known(host, st, hash_root) if hash_root is not None else None
        if os.path.lexists(path):
            remove(path)  # a second source writing the same path: the last one wins
        rel = str(path.relative_to(self.tree.root))
        if digest is not None and self.reuse.link(rel, path, digest, st.st_size, mode, uid, gid, mtime_ns):
            return
        inode = _copy_file(host, path, mode, uid, gid, mtime_ns)
        if digest is not None:
            self.reuse.written(rel, inode, st.st_size, mtime_ns, digest)


_O_SRC = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_O_DST = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _copy_file(src: Path, dst: Path, mode: int, uid: int, gid: int, mtime_ns: int) -> int:
    """Data in the kernel (copy_file_range), metadata through the open descriptor."""
    sfd = os.open(src, _O_SRC)
    try:
        dfd = os.open(dst, _O_DST, 0o600)
        try:
            left = os.fstat(sfd).st_size
            while left > 0:
                try:
                    n = os.copy_file_range(sfd, dfd, left)
                except OSError:
                    n = os.sendfile(dfd, sfd, None, left)
                if n == 0:
                    break
                left -= n
            try:
                os.fchown(dfd, uid, gid)
            except PermissionError:
                if (uid, gid) != (os.geteuid(), os.getegid()):
                    raise BuildError(f"cannot set owner {uid}:{gid} (building as non-root)") from None
            os.fchmod(dfd, mode)
            os.utime(dfd, ns=(mtime_ns, mtime_ns))
            return os.fstat(dfd).st_ino
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
