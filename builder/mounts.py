"""RUN --mount, made real for one step: host paths and runtime mounts, released afterwards.

Nothing a mount shows lands in the step's layer: every mount covers its
target while the command runs, and runtime.build.run_step takes the empty
stubs it had to create back out of the change (a target that did not exist
leaves no empty directory either, as BuildKit).

- bind: the context path (read-only as it is; a filtered copy when
  .dockerignore hides something in it or `rw` is asked), or a stage or image
  path as an overlay of that path in each of its snapshots (`rw`: with a
  throwaway upper directory);
- cache: a cachemounts.CacheMounts directory, locked per `sharing`;
- tmpfs: a fresh tmpfs;
- secret: the value in a 0700 directory on /dev/shm (memory, never the
  store's disk), bind-mounted read-only, and/or an environment variable;
- ssh: a socket of our own, with the mount's mode and owner, forwarding each
  connection to the agent socket given with --ssh.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

from storage.pathwalk import is_opaque, is_whiteout

from . import layerio, sources
from .cachemounts import CacheMounts
from .errors import StepError
from .mountspec import Mount
from .stepctx import StepContext


class Prepared:
    """What resolving a RUN's mounts at key time found, for the key and for the run."""

    def __init__(self, mounts: list[Mount], origins: list[sources.Origin | None], records: list[dict]):
        self.mounts = mounts
        self.origins = origins
        self.records = records


def prepare(ctx: StepContext, mounts: list[Mount], stage_index: int, line: int) -> Prepared:
    """Resolve `from=` origins and describe each mount for the step's cache key."""
    origins: list[sources.Origin | None] = []
    records: list[dict] = []
    for m in mounts:
        rec = m.key()
        o = None
        if m.type in ("bind", "cache") and (m.from_ or m.type == "bind"):
            o = sources.origin(ctx, m.from_, stage_index, "RUN --mount from", line) if m.from_ else sources.CONTEXT
            rec.pop("from_", None)
            if o.is_context:
                e, content = sources.context_records(ctx, m.source or "/")
                if e is None:
                    raise StepError(f"RUN --mount: {m.source or '/'} not found in the build context", line,
                                    ctx.filename)
                rec["content"] = layerio_digest(content)
            else:
                rec["content"] = o.content
        origins.append(o)
        records.append(rec)
    ctx.flush()
    return Prepared(mounts, origins, records)


def layerio_digest(records: list[str]) -> str:
    from .cache import digest_of

    return digest_of(records)


def realize(ctx: StepContext, p: Prepared, stack: ExitStack, scratch: Path, line: int) -> tuple[list, list[str]]:
    """(runtime mounts, extra environment) for the step; cleanups go on `stack`."""
    out: list = []
    env: list[str] = []
    for i, (m, o) in enumerate(zip(p.mounts, p.origins)):
        mount, extra = _MAKERS[m.type](ctx, m, o, stack, scratch / f"{m.type}-{i}", line)
        if mount is not None:
            out.append(mount)
        env.extend(extra)
    return out, env


def _lent(ctx: StepContext, m: Mount, value, what: str, flag: str, line: int) -> bool:
    """Whether a --secret/--ssh the mount names was given; a required one missing fails the step."""
    if value is None and m.required:
        raise StepError(f"{what} {m.id} is required but was not provided ({flag})", line, ctx.filename)
    return value is not None


def _cache(ctx, m: Mount, o, stack: ExitStack, where: Path, line: int):
    seed = (lambda dest: _copy_tree(ctx, o, m.source, dest, line)) if o is not None else None
    path = stack.enter_context(CacheMounts(ctx.store).use(
        m.id, f"{o.content}:{m.source}" if o is not None else "", m.sharing, m.mode or 0o755, m.uid, m.gid, seed))
    return _bind_mount(str(path), m.target, m.readonly), []  # type: ignore[arg-type]


def _tmpfs(ctx, m: Mount, o, stack: ExitStack, where: Path, line: int):
    from runtime.spec import Mount as RMount

    return RMount(m.target, "tmpfs", "tmpfs", ["nosuid", "nodev"] + ([f"size={m.size}"] if m.size else [])), []


def _secret(ctx, m: Mount, o, stack: ExitStack, where: Path, line: int):
    value = ctx.secret(m.id)
    if not _lent(ctx, m, value, "secret", f"--secret id={m.id},...", line):
        return None, []
    env = [f"{m.env}={value.decode('utf-8', 'surrogateescape')}"] if m.env is not None else []
    if m.target is None:
        return None, env
    f = _private_dir(stack, "/dev/shm") / "secret"  # memory, never the store's disk
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, value)
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode if m.mode is not None else 0o400)
    finally:
        os.close(fd)
    return _bind_mount(str(f), m.target, True), env


def _ssh(ctx, m: Mount, o, stack: ExitStack, where: Path, line: int):
    upstream = ctx.ssh_socket(m.id)
    if not _lent(ctx, m, upstream, "ssh agent", f"--ssh {m.id}=SOCKET", line):
        return None, []
    sock = _private_dir(stack, None) / "agent.sock"  # short: a socket path has 108 bytes at most
    proxy = AgentProxy(upstream, sock, m.mode if m.mode is not None else 0o600, m.uid, m.gid)  # type: ignore
    stack.callback(proxy.close)
    return _bind_mount(str(sock), m.target, False), [f"SSH_AUTH_SOCK={m.target}"]  # type: ignore[arg-type]


def _bind_mount(src: str, target: str, readonly: bool):
    from runtime.spec import Mount as RMount

    return RMount(target, "bind", src, ["rbind", "rprivate"] + (["ro"] if readonly else []))


def _private_dir(stack: ExitStack, base: str | None) -> Path:
    """A 0700 directory under `base` (the system temp dir when None or unusable), removed afterwards."""
    if base is not None and not (os.path.isdir(base) and os.access(base, os.W_OK)):
        base = None
    d = Path(tempfile.mkdtemp(prefix="soko-", dir=base))
    stack.callback(shutil.rmtree, d, True)
    return d


# -- bind ----------------------------------------------------------------------------
def _bind(ctx: StepContext, m: Mount, o: sources.Origin, stack: ExitStack, where: Path, line: int):
    if o.is_context:
        c = ctx.context
        e = c.lookup(sources.clean_source(m.source or "/"))
        if e is None:
            raise StepError(f"RUN --mount: {m.source or '/'} not found in the build context", line, ctx.filename)
        if m.readonly and (not c.matcher or not e.is_dir):
            return _bind_mount(str(e.path), m.target, True), []
        _copy_tree(ctx, o, m.source, where, line)
        return _bind_mount(str(where if e.is_dir else where / e.path.name), m.target, m.readonly), []
    return _layer_mount(ctx, o, m, where, line), []


def _layer_mount(ctx: StepContext, o: sources.Origin, m: Mount, where: Path, line: int):
    """A path of a stage or image: an overlay of that path across its snapshots, no copy made."""
    from runtime.spec import Mount as RMount

    view = o.view
    assert view is not None
    parts, entry = view.resolve("/" + sources.clean_source(m.source or "/"))
    if entry is None:
        raise StepError(f"RUN --mount: {m.source} not found in {m.from_}", line, ctx.filename)
    if not stat.S_ISDIR(entry.st.st_mode):
        return _bind_mount(entry.host_path, m.target, m.readonly)
    lowers = []
    ctx.need(view.diff_ids)
    for layer in reversed(layerio.lower_dirs(ctx.store, view.diff_ids)):  # top first
        found, stop = _dir_in_layer(layer, parts)
        if found is not None:
            lowers.append(str(found))
        if stop:
            break
    upper, work = where / "upper", where / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    opts = [f"lowerdir={':'.join(lowers)}", f"upperdir={upper}", f"workdir={work}"]
    if any("," in x or ":" in x for x in lowers + [str(upper)]) or len(",".join(opts)) > 3900:
        _copy_tree(ctx, o, m.source, where / "tree", line)  # options overlay cannot take: copy instead
        return _bind_mount(str(where / "tree"), m.target, m.readonly)
    return RMount(m.target, "overlay", "overlay", opts + (["ro"] if m.readonly else []))


def _dir_in_layer(layer: Path, parts: list[str]) -> tuple[Path | None, bool]:
    """(the directory `parts` in one snapshot or None, whether layers below are hidden by this one)."""
    cur = layer
    for i, comp in enumerate(parts):
        cur = cur / comp
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            return None, False
        if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
            return None, True
        if is_opaque(str(cur)):
            return (cur, True) if i == len(parts) - 1 else (None, True)
    return cur, is_opaque(str(cur))


def _copy_tree(ctx: StepContext, o: sources.Origin, source: str, dest: Path, line: int) -> None:
    """A copy of `source` in the origin (the context as .dockerignore shows it, or a stage or image)."""
    from .copy import copy_file

    if o.is_context:
        c = ctx.context
        e = c.lookup(sources.clean_source(source or "/"))
        if e is None:
            raise StepError(f"RUN --mount: {source or '/'} not found in the build context", line, ctx.filename)
        top, st = e.path, e.st
        walk = ((ch.rel[len(e.rel) + 1 if e.rel else 0:], ch.path, ch.st) for ch in c.walk(e.rel)) \
            if e.is_dir else iter(())
    else:
        view = o.view
        found = view.host_path("/" + sources.clean_source(source or "/"))  # type: ignore[union-attr]
        if found is None:
            raise StepError(f"RUN --mount: {source} not found", line, ctx.filename)
        top, st = Path(found[0]), found[1]
        resolved = "/" + "/".join(view.resolve("/" + sources.clean_source(source or "/"))[0])  # type: ignore
        walk = sources.view_walk(view, resolved) if stat.S_ISDIR(st.st_mode) else iter(())  # type: ignore
    if not stat.S_ISDIR(st.st_mode):
        dest.mkdir(parents=True, exist_ok=True)
        copy_file(Path(top), dest / Path(top).name, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        return
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.lchown(dest, st.st_uid, st.st_gid)
    for rel, host, s in walk:
        target = dest / rel
        kind = stat.S_IFMT(s.st_mode)
        if kind == stat.S_IFDIR:
            target.mkdir(exist_ok=True)
            os.chmod(target, stat.S_IMODE(s.st_mode))
        elif kind == stat.S_IFREG:
            copy_file(host, target, stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns)
            continue
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(host), target)
        else:
            continue
        os.lchown(target, s.st_uid, s.st_gid)


_MAKERS = {"bind": _bind, "cache": _cache, "tmpfs": _tmpfs, "secret": _secret, "ssh": _ssh}


# -- ssh ------------------------------------------------------------------------------------
class AgentProxy:
    """A unix socket of our own (the mount's mode and owner) relaying to an ssh-agent socket."""

    def __init__(self, upstream: str, path: Path, mode: int, uid: int, gid: int):
        self.upstream = upstream
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        self.listener.listen(16)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True, name="ssh-agent-proxy")
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(self.upstream)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
