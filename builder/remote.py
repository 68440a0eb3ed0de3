"""ADD's remote sources: HTTP(S) files and git repositories, as `sources.Item`s.

URLs: the content lands in the blob store (held as `builder-url:<url>`) and
its validators (ETag, Last-Modified) are remembered in `builder_url_cache`,
so a rebuild asks with If-None-Match / If-Modified-Since and a 304 reuses
the stored content without downloading it; with `--checksum` and content of
that digest already stored, no request is made at all (as BuildKit).

Git: `https://host/repo.git#ref:subdir`, `git@host:repo.git#ref`, `ssh://`,
`git://`. The ref is resolved to a commit with `git ls-remote` for the key;
the checkout happens only on a miss. Files get 0644 or 0755 (directories
0755), owner 0:0 and the commit time as mtime; `.git` is dropped unless
`--keep-git-dir`. `--checksum` for git is a prefix of the commit.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import add
from .errors import FetchError, StepError
from .sources import Item, with_mode

URL_MIGRATIONS = [
    """
    CREATE TABLE builder_url_cache (
        url TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        etag TEXT,
        last_modified TEXT,
        mtime INTEGER,
        used REAL NOT NULL
    );
    """,
]
URL_HOLD = "builder-url:"
GIT_TIMEOUT = 300


# -- HTTP(S) ------------------------------------------------------------------------
def url_item(ctx, url: str, checksum: str | None, unpack: bool, dest_is_dir: bool, line: int) -> Item:
    ctx.remote = True
    store = ctx.store
    store.db.migrate("builder_url", URL_MIGRATIONS)
    name = add.url_name(url)
    if dest_is_dir and not name:
        raise StepError(f"ADD {url}: cannot determine a file name from the URL; give a destination file",
                        line, ctx.filename)
    digest, mtime = ctx.once(("url", url, checksum), lambda: _download(ctx, url, checksum, line))
    if checksum is not None and digest != checksum:
        raise StepError(f"ADD {url}: content digest {digest} does not match --checksum {checksum}", line,
                        ctx.filename)
    store.db.execute("UPDATE builder_url_cache SET used=? WHERE url=?", (time.time(), url))
    host = store.blobs.local_path(digest)
    item = Item(name or "download", host, with_mode(os.lstat(host), 0o600),
                mtime=mtime if mtime is not None else ctx.epoch, records=[f"url {url} {digest}"])
    if unpack and add.is_archive(host):
        item.archive = True
        item.records.append("unpack")
    return item


def _download(ctx, url: str, checksum: str | None, line: int) -> tuple[str, int | None]:
    """(content digest, mtime) of a URL: fetched, or the stored copy its validators still vouch for."""
    store = ctx.store
    row = store.db.one("SELECT digest, etag, last_modified, mtime FROM builder_url_cache WHERE url=?", (url,))
    known = row is not None and store.blobs.has(row[0])
    if known and checksum is not None and row[0] == checksum:
        digest, mtime = row[0], row[3]
    else:
        try:
            d = add.fetch(url, store.blobs, checksum, row[1] if known else None, row[2] if known else None)
        except FetchError as e:
            raise StepError(str(e), line, ctx.filename) from None
        if d is None:  # 304: what we have is current
            digest, mtime = row[0], row[3]
        else:
            digest, mtime = d.digest, d.mtime
            with store.db.transaction() as c:
                c.execute("INSERT INTO builder_url_cache(url, digest, etag, last_modified, mtime, used) "
                          "VALUES(?,?,?,?,?,?) ON CONFLICT(url) DO UPDATE SET digest=excluded.digest, "
                          "etag=excluded.etag, last_modified=excluded.last_modified, mtime=excluded.mtime, "
                          "used=excluded.used", (url, digest, d.etag, d.last_modified, d.mtime, time.time()))
            store.release(URL_HOLD + url)
            store.hold(URL_HOLD + url, [digest])
    return digest, mtime


def prune_urls(store, older_than: float | None = None) -> list[tuple[str, int]]:
    """Forget downloads unused for `older_than` seconds (all when None), releasing their blobs.
    Returns (url, size) of each."""
    store.db.migrate("builder_url", URL_MIGRATIONS)
    cutoff = time.time() - older_than if older_than is not None else float("inf")
    rows = store.db.query("SELECT url, digest FROM builder_url_cache WHERE used < ?", (cutoff,))
    out = []
    for url, digest in rows:
        store.db.execute("DELETE FROM builder_url_cache WHERE url=?", (url,))
        store.release(URL_HOLD + url)
        out.append((url, store.blobs.size(digest) if store.blobs.has(digest) else 0))
    return out


# -- git --------------------------------------------------------------------------------
@dataclass
class GitRef:
    remote: str
    ref: str        # branch, tag or commit; "" for the remote's HEAD
    subdir: str


_SCP = re.compile(r"^[\w.-]+@[\w.-]+:")


def is_git(src: str) -> bool:
    """BuildKit's test: git@host:..., ssh:// or git://, or an http(s) URL whose path ends in .git."""
    if _SCP.match(src) or src.startswith(("ssh://", "git://")):
        return True
    if add.is_url(src):
        path = src.split("#", 1)[0].split("?", 1)[0]
        return path.rstrip("/").endswith(".git")
    return False


def parse_git(src: str) -> GitRef:
    remote, _, frag = src.partition("#")
    ref, _, subdir = frag.partition(":")
    return GitRef(remote, ref, subdir.strip("/"))


def _shown(remote: str) -> str:
    """The remote without credentials, for keys and messages."""
    return re.sub(r"//[^/@]*@", "//", remote)


def _git(args: list[str], env: dict, what: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise FetchError("ADD of a git repository needs git installed") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: git timed out") from None
    if p.returncode != 0:
        msg = (p.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise FetchError(f"{what}: {msg}")
    return p.stdout.decode(errors="replace")


def _git_env(ssh_socket: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "http_proxy", "https_proxy",
                                                         "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"})
    if ssh_socket:
        env["SSH_AUTH_SOCK"] = ssh_socket
    return env


def resolve_commit(g: GitRef, env: dict) -> str:
    """The commit `g.ref` names on the remote (ls-remote: no clone for a cache hit)."""
    what = f"ADD {_shown(g.remote)}"
    out = _git(["ls-remote", g.remote, *([g.ref] if g.ref else ["HEAD"])], env, what)
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    if g.ref:
        for suffix in (f"refs/tags/{g.ref}^{{}}", f"refs/tags/{g.ref}", f"refs/heads/{g.ref}", g.ref):
            for sha, name in rows:
                if name == suffix:
                    return sha
        if re.fullmatch(r"[0-9a-f]{40}", g.ref):
            return g.ref
        raise FetchError(f"{what}: no branch, tag or commit {g.ref!r}")
    if not rows:
        raise FetchError(f"{what}: the repository has no HEAD")
    return rows[0][0]


def git_item(ctx, src: str, keep_git_dir: bool, checksum: str | None, line: int) -> Item:
    ctx.remote = True
    g = parse_git(src)
    env = _git_env(ctx.ssh_socket("default"))
    try:
        commit = ctx.once(("git", g.remote, g.ref), lambda: resolve_commit(g, env))
    except FetchError as e:
        raise StepError(str(e), line, ctx.filename) from None
    if checksum is not None and not commit.startswith(checksum):
        raise StepError(f"ADD {_shown(g.remote)}: commit {commit} does not match --checksum {checksum}", line,
                        ctx.filename)

    def prepare(item: Item, scratch: Path) -> None:
        work = scratch / "git"
        what = f"ADD {_shown(g.remote)}"
        _git(["init", "-q", str(work)], env, what)
        try:
            _git(["fetch", "-q", "--depth=1", g.remote, commit], env, what, work)
        except FetchError:  # dumb HTTP and older servers: no shallow fetch of a commit
            _git(["fetch", "-q", g.remote, "+refs/heads/*:refs/remotes/r/*", "+refs/tags/*:refs/tags/*"],
                 env, what, work)
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", commit], env, what, work)
        when = int(_git(["log", "-1", "--format=%ct", commit], env, what, work).strip() or 0)
        if not keep_git_dir:
            shutil.rmtree(work / ".git")
        top = work / g.subdir if g.subdir else work
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            raise FetchError(f"{what}: no {g.subdir} in {commit[:12]}") from None
        item.host, item.st = top, _git_mode(st)
        item.mtime = ctx.epoch if ctx.epoch is not None else when
        if stat.S_ISDIR(st.st_mode):
            item.walk = lambda: _walk(top)

    name = os.path.basename(g.subdir) if g.subdir else ""
    return Item(name, None, None, records=[f"git {_shown(g.remote)} {commit} {g.subdir} keep={keep_git_dir}"],
                prepare=prepare)


def _git_mode(st: os.stat_result) -> os.stat_result:
    if stat.S_ISDIR(st.st_mode):
        return with_mode(st, 0o755)
    if stat.S_ISREG(st.st_mode):
        return with_mode(st, 0o755 if st.st_mode & 0o100 else 0o644)
    return st


def _walk(top: Path):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        base = Path(dirpath)
        for n in sorted(dirnames + filenames):
            p = base / n
            yield str(p.relative_to(top)), p, _git_mode(os.lstat(p))
