"""COPY and ADD: sources resolved (sources.py), hashed for the cache key, written as a fresh layer.

Rules, as Docker documents them:
- a directory source copies its contents, not itself;
- a file goes to `dest` itself, unless `dest` ends with `/` (or is `.`), or
  is a directory in the image, or there are several sources: then into it;
- several sources need a directory destination ending in `/`;
- wildcards match per path component (Go's filepath.Match);
- from the context, files get uid/gid 0 (or --chown); from a stage or image
  they keep their owners; modes are kept unless --chmod;
- destination paths follow the image's symlinks (`/var/run/x` lands in `/run/x`);
- ADD unpacks local tar archives, downloads URLs (file mode 0600) and checks
  out git repositories.
BuildKit's newer flags: `--exclude` (patterns relative to each source),
`--parents` (keep the source's parent directories, after a `/./` pivot),
`--link` (the layer is made on an empty tree: no lookups in the image below,
so the layer depends on the sources alone and is reused on any base).
"""
from __future__ import annotations

import os
import posixpath
import stat
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import cache as cachemod
from . import layerio, sources
from .errors import BuildError, DockerfileError, ExpansionError, StepError
from .instructions import Copy
from .perms import Chmod, resolve_owner
from .reuse import Reuse
from .sources import Item
from .stepctx import Job, StepContext
from .tree import Tree, chown, remove


class _Empty:
    """The image below as a `--link` step sees it: nothing."""
    diff_ids: list[str] = []

    def resolve(self, path: str, follow_last: bool = True):
        return [c for c in path.split("/") if c], None

    def lstat(self, path: str):
        return None

    def read_file(self, path: str):
        return None


def job(ctx: StepContext, state, stage, cmd: Copy) -> Job:
    fname = ctx.filename
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
    checksum = word(cmd.checksum) if cmd.checksum else None
    excludes = [word(x) for x in cmd.excludes]
    chmod = None
    if chmod_spec:
        try:
            chmod = Chmod(chmod_spec)
        except BuildError as e:
            raise DockerfileError(str(e), cmd.line, fname) from None
    heredocs = {h.name: h for h in cmd.heredocs}
    if not dest:
        raise DockerfileError(f"{what}: empty destination", cmd.line, fname)
    dest_is_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith(("/.", "/..")) or cmd.parents
    dest_abs = dest if dest.startswith("/") else posixpath.join(state.workdir(), dest)
    dest_abs = posixpath.normpath(dest_abs)
    if dest_abs.startswith("//"):
        dest_abs = "/" + dest_abs.lstrip("/")

    origin = sources.CONTEXT
    if cmd.from_:
        origin = sources.origin(ctx, word(cmd.from_), stage.index, f"{what} --from", cmd.line)
    matcher = sources.excluder(excludes)
    shown = [f"<<{h.name}" if (h := _heredoc_of(raw, heredocs)) is not None else word(raw) for raw in cmd.sources]

    def gather() -> list[Item]:
        items: list[Item] = []
        for raw, src in zip(cmd.sources, shown):
            h = _heredoc_of(raw, heredocs)
            if h is not None:
                text = h.text()
                if h.expand:
                    try:
                        text = state.lexer.heredoc(text, vars_).value
                    except ExpansionError as e:
                        raise DockerfileError(str(e), cmd.line, fname) from None
                items.append(sources.data_item(h.name, text.encode(), ctx.epoch))
                continue
            if cmd.is_add and origin.is_context:
                from . import add as addmod, remote  # ADD's own machinery (urllib, git): loaded for ADD only
            if cmd.is_add and origin.is_context and remote.is_git(src):
                items.append(remote.git_item(ctx, src, bool(cmd.keep_git_dir), checksum, cmd.line))
                continue
            if cmd.is_add and origin.is_context and addmod.is_url(src):
                items.append(remote.url_item(ctx, src, checksum, bool(cmd.unpack), dest_is_dir, cmd.line))
                continue
            if origin.view is not None:
                found = sources.view_sources(ctx, origin.view, src, matcher, cmd.parents)
            else:
                unpack = cmd.is_add and cmd.unpack is not False
                # the dry pass and the build may both ask: the context is walked once per build
                found = ctx.once(("context", src, unpack, tuple(excludes), cmd.parents),
                                 lambda: sources.context_sources(ctx, src, unpack, matcher, cmd.parents))
            if not found:
                where = "in stage or image" if origin.view is not None else \
                    "in build context or excluded by .dockerignore"
                raise err(f"{what} failed: file not found {where}: stat {src}: file does not exist")
            items.extend(found)
        if len(items) > 1 and not dest_is_dir:
            raise err(f"When using {what} with more than one source file, the destination must be a directory "
                      "and end with a /")
        ctx.flush()
        return items

    spec = {"cmd": what, "dest": dest_abs, "dest_dir": dest_is_dir, "chown": chown_spec, "chmod": chmod_spec,
            "from": origin.label if cmd.from_ else None, "unpack": cmd.unpack}
    # flags newer than the key format: only present when used, so older keys stay valid
    for k, v in (("link", cmd.link), ("parents", cmd.parents), ("exclude", excludes), ("checksum", checksum),
                 ("keep_git_dir", cmd.keep_git_dir)):
        if v:
            spec[k] = v
    parent = state.key
    gathered: list[list[Item]] = []

    def items() -> list[Item]:
        if not gathered:
            gathered.append(gather())
        return gathered[0]

    def keys() -> tuple[str, str | None]:
        """(step key, link key) from the content of every source (builder/CACHE.md)."""
        content = cachemod.digest_of([r for i in items() for r in i.records])
        if cmd.link:
            # the layer alone: what is copied and where, never the parent chain
            link_key = cachemod.key(None, link=spec, sources=content, **ctx.key_extra())
            return cachemod.key(parent, link_layer=link_key), link_key
        return cachemod.key(parent, copy=spec, sources=content, **ctx.key_extra()), None

    family = cachemod.key(None if cmd.link else state.key, copy=spec, **ctx.key_extra())
    created_by = f"{what} {' '.join(shown)} {dest}"
    diff_ids = list(state.config.diff_ids)

    @contextmanager
    def as_step_error():
        try:
            yield
        except BuildError as e:
            if isinstance(e, (StepError, DockerfileError)):
                raise
            raise err(str(e)) from None

    def produce() -> layerio.Pending:
        """The tree placed here; its layer written in a thread (layerio.Pending): the next RUN
        may run on the tree meanwhile. Staging is removed once the layer is settled."""
        staged = ExitStack()
        try:
            with as_step_error():
                view = _Empty() if cmd.link else ctx.view(diff_ids)
                uid, gid = resolve_owner(view, chown_spec, cmd, fname) if chown_spec else (0, 0)
                reuse = Reuse(ctx.store, family)
                root, scratch = staged.enter_context(ctx.staging()), staged.enter_context(ctx.staging())
                for it in items():
                    if it.prepare is not None:
                        it.prepare(it, scratch)
                # the previous result, taken whole and changed into this one (reuse.py); not for
                # ADD, whose archives are unpacked by a writer that knows nothing of a taken tree
                taken = reuse.start(root, may_take=not cmd.is_add)
                tree = Tree(root, view, uid, gid, taken=taken)
                placer = _Placer(tree, ctx.hashes, reuse, chmod)
                _place_all(placer, view, items(), dest_abs, dest_is_dir, chown_spec is not None, uid, gid, cmd.parents)
                tree.sweep()
                tree.finish()
                # what was written from memory is taken from there (ADD's archives may write over it)
                written = None if cmd.is_add else {os.fsencode(rel): v for rel, v in placer.data.items()}
        except BaseException:
            staged.close()
            raise

        record: list[str] = []

        def write() -> layerio.NewLayer:
            try:
                with as_step_error():  # (the tree and `reuse` no longer change: read here, off the step's path)
                    layer = layerio.write_dir(ctx.store, root, ctx.opts.storage_compression, ctx.epoch,
                                              donor=reuse.donor_layer(), members=True, written=written)
                    record.append(reuse.record(layer))
                    return layer
            finally:
                ctx.store.db.close()  # this thread's connection: closed now, not whenever a collection finds it

        def finish(layer: layerio.NewLayer) -> None:
            with as_step_error():
                chain = [*diff_ids, layer.diff_id]
                if layerio.adopt(ctx.store, chain, root):
                    reuse.remember(layerio.chain_id(chain), record[0])

        return layerio.Pending(root, write, finish, staged.close)

    if origin.view is not None and not heredocs:
        # another stage or an image: found by what it is first (when no step of the stage ran in
        # this build), its files are read only when that misses (builder/CACHE.md, "COPY --from")
        fast = cachemod.key(parent, copy=spec, paths=shown, from_result=origin.content, **ctx.key_extra())
        if origin.settled:
            return Job(None, created_by, produce, fast_key=fast, resolve_keys=keys)
        key, link_key = keys()
        return Job(key, created_by, produce, link_key, fast_key=fast, fast_lookup=False)
    key, link_key = keys()
    return Job(key, created_by, produce, link_key)


def _heredoc_of(raw: str, heredocs: dict):
    if not heredocs or not raw.startswith("<<"):
        return None
    name = raw.lstrip("<").lstrip("-").strip("'\"")
    return heredocs.get(name)


# -- writing the layer tree ----------------------------------------------------------
def _place_all(placer: "_Placer", view, items: list[Item], dest: str, dest_is_dir: bool, chowned: bool,
               uid: int, gid: int, parents: bool = False) -> None:
    tree, chmod = placer.tree, placer.chmod
    parts, entry = view.resolve(dest)
    dest_exists_dir = entry is not None and stat.S_ISDIR(entry.st.st_mode)
    into_dir = dest_is_dir or dest_exists_dir or len(items) > 1

    def owner(st: os.stat_result | None, keep: bool) -> tuple[int, int]:
        if chowned or st is None or not keep:
            return uid, gid
        return st.st_uid, st.st_gid

    for item in items:
        base = parts
        if parents:
            base = _parent_dirs(placer, parts, item, owner)
        if item.is_dir and parents:
            base = base + [item.name]
            o_uid, o_gid = owner(item.st, item.keep_owner)
            placer.place(tree.host(base), item.host, item.st, o_uid, o_gid, item.mtime, None)  # type: ignore[arg-type]
        if item.is_dir or item.archive:
            if entry is not None and not dest_exists_dir:
                raise BuildError(f"cannot copy a directory to {dest}: it is a file in the image")
            target = tree.ensure_dir(base)
            if item.archive:
                from .add import unpack

                before = os.lstat(target)
                unpack(item.host, target)  # type: ignore[arg-type]
                # the archive's own `./` entry does not change the destination (BuildKit keeps it)
                os.chown(target, before.st_uid, before.st_gid)
                os.chmod(target, stat.S_IMODE(before.st_mode))
                os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
                continue
            top = str(target)
            with placer.side_by_side():
                for rel, host, st in item.walk() if item.walk else ():  # thousands of files: strings, no Paths
                    o_uid, o_gid = owner(st, item.keep_owner)
                    placer.place(os.path.join(top, rel), host, st, o_uid, o_gid, item.mtime, item.hash_root)
            continue
        file_parts = base + [item.name] if into_dir else base
        if not file_parts:
            raise BuildError(f"cannot copy a file to {dest}")
        tree.ensure_dir(file_parts[:-1])
        target = tree.host(file_parts)
        tree.claim(target)
        if target.is_dir() and not target.is_symlink():
            raise BuildError(f"cannot copy file to /{'/'.join(file_parts)}: it is a directory")
        below = view.lstat("/" + "/".join(file_parts))
        if into_dir is False and below is not None and stat.S_ISDIR(below.st_mode):
            raise BuildError(f"cannot copy file to /{'/'.join(file_parts)}: it is a directory in the image")
        o_uid, o_gid = owner(item.st, item.keep_owner)
        if item.data is not None:
            placer.data.pop(str(target)[len(placer.root) + 1:], None)
            placer.reuse.replaced(str(target)[len(placer.root) + 1:])
            _write_data(target, item.data, chmod.apply(0o644, False) if chmod else 0o644, o_uid, o_gid, item.mtime)
            tree.place(target)
        else:
            placer.place(target, item.host, item.st, o_uid, o_gid, item.mtime, item.hash_root)  # type: ignore[arg-type]


def _parent_dirs(placer: "_Placer", parts: list[str], item: Item, owner) -> list[str]:
    """COPY --parents: the source's parent directories under `parts`, with their own modes."""
    tree = placer.tree
    tree.ensure_dir(parts)
    cur = list(parts)
    for name, st in item.parents:
        cur.append(name)
        host = tree.host(cur)
        if not host.is_dir() or host.is_symlink() or (tree.placed is not None and str(host) not in tree.placed):
            o_uid, o_gid = owner(st, item.keep_owner)
            mode = stat.S_IMODE(st.st_mode)
            if placer.chmod is not None:
                mode = placer.chmod.apply(mode, True)
            tree.make_dir(host, mode, o_uid, o_gid, st.st_mtime_ns)
    return cur


def _write_data(path: Path, data: bytes, mode: int, uid: int, gid: int, mtime: int | None) -> None:
    if path.exists() or path.is_symlink():
        remove(path)
    path.write_bytes(data)
    chown(path, uid, gid)
    os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


WRITERS = 2  # files written at once (_Placer.side_by_side): creating a file is mostly kernel CPU
BATCH = 32   # files per task of the writers


class _Placer:
    """Writes entries into the tree: hard links from the previous result when
    possible (see reuse.py), else new files copied through descriptors."""

    def __init__(self, tree: Tree, hashes, reuse: Reuse, chmod: Chmod | None):
        self.tree = tree
        self.root = str(tree.root)
        self.hashes = hashes
        self.reuse = reuse
        self.chmod = chmod
        self._batch: list[tuple] | None = None
        # files written from bytes in memory (HashCache.content): path in the tree -> (inode, bytes)
        self.data: dict[str, tuple[int, bytes]] = {}

    @contextmanager
    def side_by_side(self):
        """Regular files placed within are written by several threads once the block ends:
        creating thousands of files waits on the file system's journal far more than on the
        CPU. For one directory source's walk: each of its paths comes once, and its
        directories are made (in order, here) before any file is written."""
        self._batch = []
        try:
            yield
            batch = self._batch
        finally:
            self._batch = None
        rest = self._link_all(batch)
        if len(rest) < 2 * WRITERS:
            for args in rest:
                self._copy(*args)
            return
        from concurrent.futures import ThreadPoolExecutor

        def some(batch: list[tuple]) -> None:
            for args in batch:
                self._copy(*args)

        # a task per few files: a task per file costs as much CPU as writing a small one
        step = max(1, min(BATCH, len(rest) // (4 * WRITERS)))
        with ThreadPoolExecutor(WRITERS) as pool:
            for _ in pool.map(some, [rest[i:i + step] for i in range(0, len(rest), step)]):
                pass

    def _link_all(self, batch: list[tuple]) -> list[tuple]:
        """Hard-link what the previous result holds already (reuse.py), a directory at a time;
        returns the rest, to be written."""
        if self.reuse.donor is None or not batch:
            return batch
        cut = len(self.root) + 1
        groups: dict[str, list[tuple]] = {}
        for args in batch:
            groups.setdefault(os.path.dirname(str(args[0])), []).append(args)
        rest = []
        for target_dir, items in groups.items():
            files = [(os.path.basename(str(path)), digest, st.st_size, mode, uid, gid, mtime_ns)
                     for path, host, st, mode, uid, gid, mtime_ns, _hash_root, digest in items]
            done = self.reuse.link_dir(target_dir[cut:], target_dir, files)
            rest.extend(args for args, ok in zip(items, done) if not ok)
        if self.data:  # a path written from memory by an earlier source, linked over now
            for args in batch:
                self.data.pop(str(args[0])[cut:], None)
        return rest

    def place(self, path: Path | str, host: Path | str, st: os.stat_result, uid: int, gid: int, mtime: int | None,
              hash_root: Path | None) -> None:
        mode = stat.S_IMODE(st.st_mode)
        kind = stat.S_IFMT(st.st_mode)
        if self.chmod is not None:
            mode = self.chmod.apply(mode, kind == stat.S_IFDIR)
        mtime_ns = mtime * 1_000_000_000 if mtime is not None else st.st_mtime_ns
        if kind != stat.S_IFREG:
            self.reuse.replaced(str(path)[len(self.root) + 1:])
        if kind == stat.S_IFDIR:
            self.tree.make_dir(path, mode, uid, gid, mtime_ns)
            return
        self.tree.place(path)
        if kind == stat.S_IFREG:
            # its digest, if this build hashed it: looked up once, for the link and the copy
            digest = self.hashes.known(host, st, hash_root) if hash_root is not None else None
            if self._batch is not None:
                self._batch.append((path, host, st, mode, uid, gid, mtime_ns, hash_root, digest))
            else:
                self._file(path, host, st, mode, uid, gid, mtime_ns, hash_root, digest)
            return
        if os.path.lexists(path):
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

    def _file(self, *args) -> None:
        if not self._linked(*args):
            self._copy(*args)

    def _linked(self, path: Path | str, host: Path | str, st: os.stat_result, mode: int, uid: int, gid: int,
                mtime_ns: int, hash_root: Path | None, digest: str | None) -> bool:
        """Whether the file could be hard-linked from the previous result (see reuse.py)."""
        rel = str(path)[len(self.root) + 1:]
        if digest is None or not self.reuse.link(rel, path, digest, st.st_size, mode, uid, gid, mtime_ns):
            return False
        self.data.pop(rel, None)
        return True

    def _copy(self, path: Path | str, host: Path | str, st: os.stat_result, mode: int, uid: int, gid: int,
              mtime_ns: int, hash_root: Path | None, digest: str | None) -> None:
        rel = str(path)[len(self.root) + 1:]
        data = self.hashes.content(host, st) if hash_root is not None else None
        if data is not None and len(data) != st.st_size:
            data = None
        try:
            written = copy_file(host, path, mode, uid, gid, mtime_ns, st.st_size, data)
        except FileExistsError:  # a second source writing the same path: the last one wins
            remove(path)
            self._file(path, host, st, mode, uid, gid, mtime_ns, hash_root, digest)
            return
        if data is not None:
            self.data[rel] = (written.st_ino, data)  # the layer takes it too (write_dir)
        else:
            self.data.pop(rel, None)
        if digest is not None:
            self.reuse.written(rel, written, digest)


_O_SRC = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_O_DST = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def copy_file(src: Path | str, dst: Path | str, mode: int, uid: int, gid: int, mtime_ns: int,
              size: int | None = None, data: bytes | None = None) -> os.stat_result:
    """A new file `dst` with `src`'s bytes (`size` of them, when the caller has its lstat; `data`
    when the caller has read them already) and the given metadata. Data in the kernel
    (copy_file_range), metadata through the open descriptor; owner and mode are set only where
    creating the file did not already give them (thousands of files: each syscall counts)."""
    sfd = os.open(src, _O_SRC) if data is None else -1
    try:
        dfd = os.open(dst, _O_DST, mode & 0o777)  # the tree is private: no one sees it before it is done
        try:
            if data is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(dfd, view):]
            left = 0 if data is not None else os.fstat(sfd).st_size if size is None else size
            while left > 0:
                try:
                    n = os.copy_file_range(sfd, dfd, left)
                except OSError:
                    n = os.sendfile(dfd, sfd, None, left)
                if n == 0:
                    break
                left -= n
            os.utime(dfd, ns=(mtime_ns, mtime_ns))
            st = os.fstat(dfd)
            owned = (st.st_uid, st.st_gid) == (uid, gid)  # not when uid/gid differ or a setgid parent
            if not owned:
                try:
                    os.fchown(dfd, uid, gid)
                except PermissionError:
                    raise BuildError(f"cannot set owner {uid}:{gid} (building as non-root)") from None
            if not owned or stat.S_IMODE(st.st_mode) != mode:  # umask, setuid bits (chown clears them)
                os.fchmod(dfd, mode)
                st = os.fstat(dfd)
            return st
        finally:
            os.close(dfd)
    finally:
        if sfd >= 0:
            os.close(sfd)
