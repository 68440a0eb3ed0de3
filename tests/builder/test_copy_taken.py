"""A COPY run again takes its previous result's snapshot whole and changes it into the new result
(reuse.py, `take`): the tree and the layer must be exactly what a store that never saw the earlier
results makes of the same context, whatever changed in between, and the earlier images must still
read, run and be collected as before."""
from __future__ import annotations

import os
import shutil
import signal
import select
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.snapshots import Snapshots, chain_ids
from storage.images import ImageStore
from tests.builder.helpers import ImageFS, do_build, import_busybox, write_context

DF = "FROM busybox\nCOPY src/ /app/src/\nCOPY one.txt /app/\n"
EPOCH = 1_700_000_000  # /app/src is made at build time: clamped, so two builds' layers can be compared


OLD = int(time.time()) - 3600


def _old(root: Path) -> None:
    """What was just written, made older than the racy window (the files' digests are trusted,
    their snapshot copies reusable); what was there before keeps its mtime."""
    for p in [root, *root.rglob("*")]:
        if p.lstat().st_mtime > OLD + 60:
            os.utime(p, (OLD, OLD), follow_symlinks=False)


def _edit(ctx: Path) -> None:
    (ctx / "src/d1/f005.txt").write_text("edited\n")


def _delete_file(ctx: Path) -> None:
    (ctx / "src/d2/f006.txt").unlink()


def _delete_dir(ctx: Path) -> None:
    shutil.rmtree(ctx / "src/d3")


def _chmod(ctx: Path) -> None:
    os.chmod(ctx / "src/d0/f004.txt", 0o600)


def _file_to_dir(ctx: Path) -> None:
    (ctx / "src/d0/f008.txt").unlink()
    (ctx / "src/d0/f008.txt").mkdir()
    (ctx / "src/d0/f008.txt/inside").write_text("in a directory now\n")


def _dir_to_file(ctx: Path) -> None:
    shutil.rmtree(ctx / "src/d2")
    (ctx / "src/d2").write_text("a file now\n")


def _symlink(ctx: Path) -> None:
    os.symlink("d1/f001.txt", ctx / "src/link")


def _symlink_to_file(ctx: Path) -> None:
    (ctx / "src/link").unlink()
    (ctx / "src/link").write_text("no longer a link\n")


def _added(ctx: Path) -> None:
    (ctx / "src/new/deeper").mkdir(parents=True)
    (ctx / "src/new/deeper/file").write_text("new\n")
    (ctx / "src/empty").mkdir()


CHANGES = [_edit, _delete_file, _delete_dir, _chmod, _file_to_dir, _dir_to_file, _symlink, _symlink_to_file,
           _added]


def _tree(root: Path) -> dict[str, tuple]:
    """Everything a layer says of a tree: kind, mode, owner, content or target, and file mtimes."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            what = (p.read_bytes(), st.st_mtime_ns)
        elif stat.S_ISLNK(st.st_mode):
            what = (os.readlink(p),)
        else:
            what = ()
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, *what)
    return out


def _chain(store: ImageStore, ref: str, layer: int = -1) -> str:
    return chain_ids(store.resolve(ref).config.diff_ids)[layer]


def _snapshot(store: ImageStore, ref: str, layer: int = -1) -> Path:
    return Snapshots(store).path(_chain(store, ref, layer))


@pytest.fixture
def ctx(tmp_path):
    files = {f"src/d{i % 4}/f{i:03d}.txt": f"file {i}\n" * (i % 7 + 1) for i in range(40)}
    files["one.txt"] = "one\n"
    root = write_context(tmp_path / "ctx", files)
    _old(root)
    return root


@dataclass
class Takes:
    """Every take a build tried, in order, with its answer."""
    tried: list[tuple[str, bool]] = field(default_factory=list)  # (chain ID, taken)

    @property
    def taken(self) -> list[str]:
        return [chain for chain, ok in self.tried if ok]


@pytest.fixture
def took(monkeypatch) -> Takes:
    """The takes a build tried (a refusal is recorded too: a test of one proves it was asked)."""
    takes = Takes()
    real = Snapshots.take

    def take(self, chain_id, into):
        ok = real(self, chain_id, into)
        takes.tried.append((chain_id, ok))
        return ok

    monkeypatch.setattr(Snapshots, "take", take)
    return takes


def test_each_change_gives_what_a_fresh_store_gives(store, ctx, took, tmp_path, busybox_rootfs):
    do_build(store, ctx, DF, tags=["v0"], source_date_epoch=EPOCH)
    for n, change in enumerate(CHANGES, 1):
        before = _snapshot(store, f"v{n - 1}", -2)  # the `COPY src/` result
        change(ctx)
        _old(ctx)
        do_build(store, ctx, DF, tags=[f"v{n}"], source_date_epoch=EPOCH)
        assert took.tried[-1:] == [(_chain(store, f"v{n - 1}", -2), True)], change.__name__
        assert not before.exists()
        fresh = ImageStore(tmp_path / f"fresh{n}")
        import_busybox(fresh, busybox_rootfs)
        do_build(fresh, ctx, DF, tags=["f"], source_date_epoch=EPOCH)
        assert store.resolve(f"v{n}").config.diff_ids == fresh.resolve("f").config.diff_ids, change.__name__
        assert _tree(_snapshot(store, f"v{n}", -2)) == _tree(_snapshot(fresh, "f", -2)), change.__name__
    # every earlier image still holds its own files (its taken snapshot unpacked again from its layer)
    assert ImageFS(store, "v0").read("/app/src/d1/f005.txt") == b"file 5\n" * 6
    assert ImageFS(store, "v1").read("/app/src/d1/f005.txt") == b"edited\n"
    assert ImageFS(store, "v1").read("/app/src/d2/f006.txt") == b"file 6\n" * 7
    assert ImageFS(store, "v3").mode("/app/src/d0/f004.txt") == 0o644
    assert ImageFS(store, "v4").mode("/app/src/d0/f004.txt") == 0o600
    assert ImageFS(store, "v5").read("/app/src/d0/f008.txt/inside") == b"in a directory now\n"
    assert ImageFS(store, "v7").readlink("/app/src/link") == "d1/f001.txt"
    assert ImageFS(store, "v8").read("/app/src/link") == b"no longer a link\n"


def test_the_old_and_new_images_run_and_gc_keeps_what_they_use(store, ctx, took, soko):
    do_build(store, ctx, DF, tags=["old"])
    _edit(ctx)
    _delete_file(ctx)
    _old(ctx)
    do_build(store, ctx, DF, tags=["new"])
    assert len(took.taken) == 1
    store.db.close()
    soko("gc")
    cat = "cat /app/src/d1/f005.txt; ls /app/src/d2 | wc -l"
    assert soko("run", "--rm", "--network", "none", "old", "sh", "-c", cat).stdout.split() == \
        ["file", "5"] * 6 + ["10"]
    assert soko("run", "--rm", "--network", "none", "new", "sh", "-c", cat).stdout.split() == ["edited", "9"]
    # and the build cache still knows both: reverting the edit is a cache hit
    (ctx / "src/d1/f005.txt").write_text("file 5\n" * 6)
    (ctx / "src/d2/f006.txt").write_text("file 6\n" * 7)
    _old(ctx)
    again = do_build(ImageStore(store.root), ctx, DF, tags=["again"])
    assert [e.cached for e in again.steps] == [True] * len(again.steps)
    assert ImageStore(store.root).resolve("again").config.diff_ids == \
        ImageStore(store.root).resolve("old").config.diff_ids


def test_a_snapshot_in_use_is_not_taken(store, ctx, took, soko):
    """Not while this process has it (a view, a RUN's lower) or a container records it: the files
    are linked from it instead, and it stays as it was."""
    do_build(store, ctx, DF, tags=["v1"])
    ImageFS(store, "v1")  # this process now holds v1's snapshots
    _edit(ctx)
    _old(ctx)
    do_build(store, ctx, DF, tags=["v2"])
    assert took.tried == [(_chain(store, "v1", -2), False)]  # asked, and refused
    assert (_snapshot(store, "v1", -2) / "app/src/d1/f005.txt").read_bytes() == b"file 5\n" * 6
    assert (_snapshot(store, "v2", -2) / "app/src/d1/f005.txt").read_bytes() == b"edited\n"
    store.db.close()
    soko("create", "--name", "holder", "v2")  # another process: v2's layers are a container's
    (ctx / "src/d1/f005.txt").write_text("edited again\n")
    _old(ctx)
    store = ImageStore(store.root)
    do_build(store, ctx, DF, tags=["v3"])
    assert took.tried[1:] == [(_chain(store, "v2", -2), False)]
    assert (_snapshot(store, "v2", -2) / "app/src/d1/f005.txt").read_bytes() == b"edited\n"
    assert ImageFS(store, "v3").read("/app/src/d1/f005.txt") == b"edited again\n"


def test_a_source_that_was_a_directory_and_is_now_a_file(store, ctx, took, tmp_path, busybox_rootfs):
    """The previous result has a directory where the single file now goes: it is the previous
    result's, not the image's, so the file replaces it."""
    df = "FROM busybox\nCOPY item /app/item\n"
    (ctx / "item").mkdir()
    (ctx / "item/a").write_text("a\n")
    _old(ctx)
    do_build(store, ctx, df, tags=["v1"], source_date_epoch=EPOCH)
    shutil.rmtree(ctx / "item")
    (ctx / "item").write_text("a file\n")
    _old(ctx)
    do_build(store, ctx, df, tags=["v2"], source_date_epoch=EPOCH)
    assert len(took.taken) == 1
    assert ImageFS(store, "v2").read("/app/item") == b"a file\n"
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, df, tags=["f"], source_date_epoch=EPOCH)
    assert store.resolve("v2").config.diff_ids == fresh.resolve("f").config.diff_ids


FLAVOURS = {
    "parents": "FROM busybox\nCOPY --parents src/./d1/f001.txt src/./d0/ /p/\n",
    "files": "FROM busybox\nCOPY one.txt src/d1/f001.txt src/d0/f000.txt /f/\n",
    "chown-chmod": "FROM busybox\nCOPY --chown=7:8 --chmod=0750 src/ /c/\n",
    "exclude": "FROM busybox\nCOPY --exclude=*5.txt src/ /x/\n",
    "heredoc": "FROM busybox\nCOPY <<EOF src/ /h/\nhello\nEOF\n",
    "from-stage": "FROM busybox AS b\nCOPY src/ /s/\nFROM busybox\nCOPY --from=b /s/ /t/\n",
    "link": "FROM busybox\nCOPY --link src/ /l/\n",
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_each_kind_of_copy_taken_gives_what_a_fresh_store_gives(flavour, store, ctx, took, tmp_path,
                                                                   busybox_rootfs):
    df = FLAVOURS[flavour]
    os.chmod(ctx / "src/d1", 0o750)  # a directory's own mode, not the one a directory made for a path gets
    do_build(store, ctx, df, tags=["v0"], source_date_epoch=EPOCH)
    for n, change in enumerate((_edit, _file_to_dir, _dir_to_file), 1):
        change(ctx)
        if change is _file_to_dir:
            (ctx / "src/d1/f001.txt").unlink()  # a single source of "files" becomes a directory
            (ctx / "src/d1/f001.txt").mkdir()
            (ctx / "src/d1/f001.txt/in").write_text("in\n")
        _old(ctx)
        do_build(store, ctx, df, tags=[f"v{n}"], source_date_epoch=EPOCH)
        fresh = ImageStore(tmp_path / f"fresh{n}")
        import_busybox(fresh, busybox_rootfs)
        do_build(fresh, ctx, df, tags=["f"], source_date_epoch=EPOCH)
        assert store.resolve(f"v{n}").config.diff_ids == fresh.resolve("f").config.diff_ids, change.__name__
        assert _tree(_snapshot(store, f"v{n}")) == _tree(_snapshot(fresh, "f")), change.__name__
    assert took.taken  # the previous results were taken (not built afresh)


def test_an_unchanged_file_named_as_a_source_is_kept_where_it_is(store, ctx, took):
    df = "FROM busybox\nCOPY one.txt src/d1/f001.txt /f/\n"
    do_build(store, ctx, df, tags=["v0"])
    ino = os.stat(_snapshot(store, "v0") / "f/f001.txt").st_ino
    (ctx / "one.txt").write_text("changed\n")
    _old(ctx)
    do_build(store, ctx, df, tags=["v1"])
    assert len(took.taken) == 1
    assert os.stat(_snapshot(store, "v1") / "f/f001.txt").st_ino == ino  # not written again
    assert (_snapshot(store, "v1") / "f/one.txt").read_bytes() == b"changed\n"


# a stage that is DF, and a RUN with its result mounted (an overlay with the COPY's snapshot as a lower
# directory, which no container records) that stops until the test lets it go (the context's sync/go)
PAUSED_RUN = DF.replace("FROM busybox", "FROM busybox AS b") + (
    "FROM busybox\n"
    "RUN --mount=type=bind,from=b,source=/app,target=/m --mount=type=bind,source=sync,target=/sync "
    "sh -c 'echo paused-$((6*7)); while [ ! -e /sync/go ]; do sleep 0.05; done; cat /m/src/d1/f005.txt > /seen'\n")


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    """What `proc` wrote up to `marker` (read from the descriptor: a buffered reader may hold the
    marker already while select waits for more)."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            got += chunk
            if marker.encode() in got:
                return [got.decode(errors="replace")]
    lines = [got.decode(errors="replace")]
    proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: where it stands, in the message
    lines.append(proc.communicate(timeout=30)[0].decode(errors="replace"))
    raise AssertionError(f"no {marker!r} from the build: {''.join(lines)}")


def test_a_snapshot_another_process_uses_is_not_taken(store, ctx, took, soko, tmp_path, busybox_rootfs):
    """A build in another process paused inside a RUN that has the COPY's previous result mounted
    (an overlay lower directory): an edit rebuild meanwhile links from that snapshot instead of
    taking it (runtime/snapholds.py), the tree under the paused RUN stays as it was, and both
    builds give what they should. Without the lock the edit takes the snapshot and changes it
    under the mount."""
    (ctx / "sync").mkdir()
    _old(ctx)
    do_build(store, ctx, DF, tags=["v1"], source_date_epoch=EPOCH)
    held = _snapshot(store, "v1", -2)
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)  # the very directory, wherever it is moved
    try:
        before = _tree(Path(f"/proc/self/fd/{fd}"))
        store.db.close()
        (tmp_path / "Dockerfile.run").write_text(PAUSED_RUN)
        proc = subprocess.Popen([*soko.argv(), "build", "--progress", "plain", "-f", str(tmp_path / "Dockerfile.run"),
                                 "-t", "paused", str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**soko.env, "SOURCE_DATE_EPOCH": str(EPOCH), "PYTHONFAULTHANDLER": "1"})
        try:
            out = _wait_for(proc, "paused-42")  # the RUN prints it (its line in the log shows the sum)
            _edit(ctx)
            _old(ctx)
            store = ImageStore(store.root)
            do_build(store, ctx, DF, tags=["v2"], source_date_epoch=EPOCH)
            assert took.tried == [(_chain(store, "v1", -2), False)]  # the one under the paused RUN: refused
            assert _tree(Path(f"/proc/self/fd/{fd}")) == before
            (ctx / "sync/go").touch()
            rest, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, "".join(out) + rest.decode(errors="replace")
        assert _tree(Path(f"/proc/self/fd/{fd}")) == before
        # still v1's snapshot: stage b was v1 (a cache hit; a miss would have taken it itself)
        assert os.stat(held).st_ino == os.fstat(fd).st_ino
    finally:
        os.close(fd)
    store = ImageStore(store.root)
    assert ImageFS(store, "paused").read("/seen") == b"file 5\n" * 6
    assert ImageFS(store, "v1").read("/app/src/d1/f005.txt") == b"file 5\n" * 6
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, DF, tags=["f"], source_date_epoch=EPOCH)
    assert store.resolve("v2").config.diff_ids == fresh.resolve("f").config.diff_ids
    assert _tree(_snapshot(store, "v2", -2)) == _tree(_snapshot(fresh, "f", -2))


def test_two_edit_rebuilds_at_once_in_two_processes(store, ctx, soko, tmp_path, busybox_rootfs):
    """Two CI jobs on one store rebuild the same edit at the same moment: at most one takes the
    previous result, the other links from it or copies afresh; both images are the fresh store's."""
    do_build(store, ctx, DF, tags=["v1"], source_date_epoch=EPOCH)
    _edit(ctx)
    _old(ctx)
    store.db.close()
    env = {**soko.env, "SOURCE_DATE_EPOCH": str(EPOCH)}
    procs = [subprocess.Popen([*soko.argv(), "build", "-q", "-t", tag, str(ctx)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env) for tag in ("a", "b")]
    outs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    store = ImageStore(store.root)
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, DF, tags=["f"], source_date_epoch=EPOCH)
    want = fresh.resolve("f").config.diff_ids
    assert store.resolve("a").config.diff_ids == want and store.resolve("b").config.diff_ids == want
    assert _tree(_snapshot(store, "a", -2)) == _tree(_snapshot(fresh, "f", -2))
    assert ImageFS(store, "v1").read("/app/src/d1/f005.txt") == b"file 5\n" * 6
    assert ImageFS(store, "a").read("/app/src/d1/f005.txt") == b"edited\n"


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_linked_file_replaced_by_a_later_source_is_not_taken_whole(store, tmp_path, busybox_rootfs, kind):
    """One COPY, two sources: the first's file is linked from the previous result, then the
    second source puts a symlink (or a directory) at the same path. The layer must hold what
    the tree holds, as a fresh store's does, not the previous tar's member for that path."""
    files = {f"a/f{i:02d}.txt": f"a {i}\n" * (i + 1) for i in range(12)}
    files["b/keep.txt"] = "b\n"
    ctx = write_context(tmp_path / "ctx", files)
    _old(ctx)
    df = "FROM busybox\nCOPY a/ b/ /dest/\n"
    do_build(store, ctx, df, tags=["v1"], source_date_epoch=EPOCH)
    if kind == "symlink":
        os.symlink("keep.txt", ctx / "b/f03.txt")
    else:
        (ctx / "b/f03.txt").mkdir()
        (ctx / "b/f03.txt/inside").write_text("in\n")
    _old(ctx)
    do_build(store, ctx, df, tags=["v2"], source_date_epoch=EPOCH)
    fresh = ImageStore(tmp_path / "fresh")
    import_busybox(fresh, busybox_rootfs)
    do_build(fresh, ctx, df, tags=["f"], source_date_epoch=EPOCH)
    assert _tree(_snapshot(store, "v2")) == _tree(_snapshot(fresh, "f"))
    assert store.resolve("v2").config.diff_ids == fresh.resolve("f").config.diff_ids
