"""Snapshots (whiteouts, sharing, concurrent unpack, copy fallback) and the builder's run_step."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import subprocess
from pathlib import Path

import pytest

from runtime import RunOptions, build, run
from runtime.layerview import LayerView, is_opaque, is_whiteout
from runtime.snapholds import holding
from runtime.snapshots import Snapshots, chain_ids, prune

from .conftest import run_cli
from tests.tarballs import make_tar

from .helpers import add_image

SNAPSHOTTERS = ["overlay", "copy"]


def base_layer(store) -> bytes:
    return store.blobs.read_bytes(store.resolve("busybox").manifest.layers[0].digest)


@pytest.fixture
def layered(store):
    """busybox, then a layer that deletes /bin/vi and makes /etc opaque with a new passwd."""
    top = make_tar([
        ("file", "bin/.wh.vi", ""),
        ("dir", "etc/"),
        ("file", "etc/.wh..wh..opq", ""),
        ("file", "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnew:x:77:77::/:/bin/sh\n"),
        ("file", "added", "added-by-layer-2\n"),
    ])
    return add_image(store, [base_layer(store), top], {"Cmd": ["sh"]}, tag="layered")


def test_snapshot_dirs_are_in_overlay_form_and_shared(store, layered):
    snaps = Snapshots(store)
    dirs = snaps.prepare_image(layered)
    cids = chain_ids(layered.config.diff_ids)
    assert dirs == [snaps.path(c) for c in cids]
    vi = os.lstat(dirs[1] / "bin" / "vi")
    assert is_whiteout(vi)
    assert is_opaque(str(dirs[1] / "etc"))
    # the busybox image shares the bottom snapshot: nothing new is unpacked
    before = sorted(os.listdir(snaps.root))
    assert snaps.prepare_image(store.resolve("busybox")) == dirs[:1]
    assert sorted(os.listdir(snaps.root)) == before


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_whiteouts_and_opaque_dirs_inside_the_container(store, layered, snapshotter):
    p = run_cli(store.root, "--rm", "--snapshotter", snapshotter, "-u", "new", "layered", "sh", "-c",
                "id -u; ls /bin/vi 2>&1; ls /etc | sort | tr '\\n' ' '; echo; cat /added")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    lines = out.splitlines()
    assert lines[0] == "77"
    assert "No such file" in lines[1]
    assert lines[2].split() == ["hostname", "hosts", "passwd", "resolv.conf"]  # group etc. hidden
    assert lines[3] == "added-by-layer-2"


def _prepare(root: str, diff_ids: list[str], q) -> None:
    from storage.images import ImageStore

    try:
        Snapshots(ImageStore(root)).prepare(diff_ids)
        q.put("ok")
    except BaseException as e:  # noqa: BLE001
        q.put(repr(e))


def test_concurrent_unpack_of_the_same_layers(store, layered):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    diff_ids = list(layered.config.diff_ids)
    procs = [ctx.Process(target=_prepare, args=(str(store.root), diff_ids, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [q.get(timeout=5) for _ in procs] == ["ok"] * 4
    names = os.listdir(store.root / "snapshots")
    assert sorted(names) == sorted(c[7:] for c in chain_ids(diff_ids))
    assert os.path.isfile(store.root / "snapshots" / chain_ids(diff_ids)[0][7:] / "bin" / "busybox")


def test_prune_keeps_what_images_use(store, layered):
    snaps = Snapshots(store)
    snaps.prepare_image(layered)
    stray = chain_ids([layered.config.diff_ids[1]])[0]  # a chain no image has
    with holding():
        snaps.prepare([layered.config.diff_ids[1]])
        assert snaps.has(stray)
        assert prune(store, dry_run=True) == [stray] and snaps.has(stray)
        assert prune(store) == [] and snaps.has(stray)  # held (a build using it): not removed
    assert prune(store) == [stray]
    assert not snaps.has(stray)
    assert all(snaps.has(c) for c in chain_ids(layered.config.diff_ids))


def test_overlay_unavailable_falls_back_to_copy_automatically(tmp_path, busybox_layer):
    """A store on overlayfs cannot hold an overlay's upper dir: the copy fallback takes over."""
    from storage.images import ImageStore

    from .conftest import BUSYBOX_CONFIG

    for d in ("l", "u", "w", "m"):
        (tmp_path / d).mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w", str(tmp_path / "m")],
                   check=True)
    try:
        s = ImageStore(tmp_path / "m" / "store")
        add_image(s, [busybox_layer], BUSYBOX_CONFIG, tag="busybox")
        events: list[tuple[str, str]] = []
        out: list[bytes] = []
        status = run(s, "busybox", RunOptions(rm=True, command=["sh", "-c", "echo ok > /f; cat /f"]),
                     on_output=out.append, on_event=lambda k, m: events.append((k, m)))
        assert status == 0 and b"".join(out) == b"ok\n"
        assert any(k == "fallback" for k, _ in events)
        assert [n for n in os.listdir(s.root / "containers") if n != ".lock"] == []
        # The verdict is about that filesystem: a store on another one in this same process
        # still gets an overlay (its upper directory holds what the container wrote).
        plain = ImageStore(tmp_path / "plain")
        add_image(plain, [busybox_layer], BUSYBOX_CONFIG, tag="busybox")
        events.clear()
        assert run(plain, "busybox", RunOptions(name="kept", command=["sh", "-c", "echo hi > /kept"]),
                   on_output=out.append, on_event=lambda k, m: events.append((k, m))) == 0
        assert not any(k == "fallback" for k, _ in events)
        (cid,) = [n for n in os.listdir(plain.root / "containers") if not n.startswith(".")]
        assert (plain.root / "containers" / cid / "upper" / "kept").read_text() == "hi\n"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "m")], check=True)


def _tree(view: LayerView, rel: str = "") -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, content or link) of a merged view."""
    out = {}
    for name, e in sorted(view.listdir(rel).items()):
        path = f"{rel}/{name}"
        st = e.st
        extra: object = None
        if stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(Path(e.host_path).read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(e.host_path)
        out[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
        if stat.S_ISDIR(st.st_mode):
            out.update(_tree(view, path))
    return out


STEP = ("echo hi > /new; rm /etc/group; mkdir -p /d/e; rm -rf /home; mkdir /home; echo y > /home/y; "
        "chmod 700 /tmp; ln -s /new /link; echo out; echo err >&2; exit 5")


def test_run_step_upper_is_the_change_in_both_snapshotters(store):
    diff_ids = list(store.resolve("busybox").config.diff_ids)
    lowers = Snapshots(store).prepare(diff_ids)
    results = {}
    for snap in SNAPSHOTTERS:
        upper, work = store.root / f"upper-{snap}", store.root / f"work-{snap}"
        upper.mkdir()
        work.mkdir()
        chunks: list[bytes] = []
        status = build.run_step(store, diff_ids, upper, work, ["sh", "-c", STEP], ["PATH=/bin"], None, "/",
                                network="none", on_output=chunks.append, snapshotter=snap)
        assert status == 5
        assert sorted(b"".join(chunks).split()) == [b"err", b"out"]
        assert (upper / "new").read_text() == "hi\n"
        assert is_whiteout(os.lstat(upper / "etc" / "group"))
        assert (upper / "d" / "e").is_dir()
        assert os.readlink(upper / "link") == "/new"
        assert stat.S_IMODE(os.lstat(upper / "tmp").st_mode) == 0o700
        assert not (upper / "bin").exists()  # untouched directories are not in the change
        results[snap] = _tree(LayerView([str(upper)] + [str(p) for p in reversed(lowers)]))
    assert results["overlay"] == results["copy"]
    assert "/etc/group" not in results["copy"] and "/home/app" not in results["copy"]
    assert [n for n in os.listdir(store.root / "containers") if n != ".lock"] == []


def test_run_step_user_workdir_env_network_and_mounts(store, tmp_path):
    diff_ids = list(store.resolve("busybox").config.diff_ids)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "file").write_text("context-file\n")
    upper, work = store.root / "u", store.root / "w"
    upper.mkdir()
    work.mkdir()
    chunks: list[bytes] = []
    status = build.run_step(store, diff_ids, upper, work,
                            ["sh", "-c", "id -u; pwd; echo $A $HOME; ls /sys/class/net; cat /ctx/file; "
                                         "touch /ctx/nope 2>/dev/null || echo ro"],
                            ["A=1"], "app", "/home/app/w", network="none", mounts=[(str(ctx), "/ctx", True)],
                            on_output=chunks.append)
    assert status == 0
    assert b"".join(chunks).decode().split() == ["1000", "/home/app/w", "1", "/home/app", "lo",
                                                 "context-file", "ro"]
    assert (upper / "home" / "app" / "w").is_dir()


def test_run_step_upper_becomes_a_layer(store):
    """The upper dir feeds storage.layers.write_layer_from_overlay; the new image sees the change."""
    from storage import mediatypes as mt
    from storage.layers import write_layer_from_overlay
    from storage.model import Descriptor

    img = store.resolve("busybox")
    upper, work = store.root / "u", store.root / "w"
    upper.mkdir()
    work.mkdir()
    assert build.run_step(store, list(img.config.diff_ids), upper, work,
                          ["sh", "-c", "echo built > /built; rm /bin/vi"], [], None, "/",
                          on_output=lambda b: None) == 0
    info = write_layer_from_overlay(upper, store.blobs)
    store.record_layer(info.diff_id, info.digest, info.compression, info.size)
    cfg = img.config.changed()
    cfg.diff_ids.append(info.diff_id)
    m = store.commit(cfg, list(img.manifest.layers) + [Descriptor(mt.OCI_LAYER_GZIP if info.compression == "gzip"
                                                                  else mt.OCI_LAYER, info.digest, info.size)])
    out: list[bytes] = []
    assert run(store, m.digest, RunOptions(rm=True, command=["sh", "-c", "cat /built; ls /bin/vi"]),
               on_output=out.append) == 1
    text = b"".join(out).decode()
    assert "built" in text and "No such file" in text


def test_read_file_and_resolve_user_for_copy_chown(store, layered):
    diff_ids = list(layered.config.diff_ids)
    assert b"new:x:77" in build.read_file(store, diff_ids, "/etc/passwd")
    assert build.read_file(store, diff_ids, "/etc/group") is None  # hidden by the opaque /etc
    assert build.read_file(store, diff_ids, "/bin/vi") is None
    u = build.resolve_user(store, diff_ids, "new")
    assert (u.uid, u.gid) == (77, 77)


def test_run_steps_in_parallel_threads(store):
    """The builder may run independent stages in threads: steps must not need the main thread."""
    import threading

    diff_ids = list(store.resolve("busybox").config.diff_ids)
    results: dict[int, object] = {}

    def step(i: int) -> None:
        upper, work = store.root / f"u{i}", store.root / f"w{i}"
        upper.mkdir()
        work.mkdir()
        try:
            results[i] = build.run_step(store, diff_ids, upper, work, ["sh", "-c", f"echo {i} > /n; exit {i}"],
                                        [], None, "/", on_output=lambda b: None)
        except BaseException as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=step, args=(i,)) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {1: 1, 2: 2, 3: 3}
    for i in (1, 2, 3):
        assert (store.root / f"u{i}" / "n").read_text() == f"{i}\n"


@pytest.mark.parametrize("rt", ["builtin", "runc"])
def test_many_layers_beyond_one_page_of_mount_options(store, rt):
    layers = [base_layer(store)] + [make_tar([("file", f"l{i:03d}", f"{i}\n"), ("file", "top", f"{i}\n")])
                                    for i in range(70)]
    add_image(store, layers, {"Cmd": ["sh"]}, tag="tall")
    p = run_cli(store.root, "--rm", "--runtime", rt, "tall", "sh", "-c",
                "cat /l000 /l069 /top; ls / | grep -c '^l'", env={"SOKO_RUNTIME_EVENTS": "1"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == ["0", "69", "69", "70"]
    assert b"fallback" not in p.stderr  # the overlay itself, not the copy


def _tree_with(path: Path, name: str) -> Path:
    (path / "d").mkdir(parents=True)
    (path / "d" / name).write_text(name)
    os.chmod(path, 0o700)
    return path


def test_adopt_makes_a_tree_the_snapshot_and_records_it(store):
    snaps = Snapshots(store)
    base = list(store.resolve("busybox").config.diff_ids)
    diff_ids = base + ["sha256:" + "ab" * 32]
    cid = chain_ids(diff_ids)[-1]
    tree = _tree_with(store.root / "staging-a", "mine")
    ino = os.lstat(tree).st_ino
    p = snaps.adopt(diff_ids, tree)
    assert p == snaps.path(cid) and snaps.has(cid) and not tree.exists()
    assert os.lstat(p).st_ino == ino and (p / "d" / "mine").read_text() == "mine"
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o755  # like an unpacked snapshot's root
    assert tuple(store.db.one("SELECT diff_id, parent FROM snapshots WHERE chain_id=?", (cid,))) == (
        diff_ids[-1], chain_ids(base)[-1])
    # one exists already: it stays, the new tree is consumed
    other = _tree_with(store.root / "staging-b", "theirs")
    assert snaps.adopt(diff_ids, other) == p and not other.exists()
    assert os.listdir(p / "d") == ["mine"]
    assert cid not in prune(store, keep=[cid], dry_run=True) and cid in prune(store, dry_run=True)


def _adopt(root: str, diff_ids: list[str], tree: str, barrier, q) -> None:
    from storage.images import ImageStore

    try:
        ino = os.lstat(tree).st_ino
        barrier.wait(10)
        p = Snapshots(ImageStore(root)).adopt(diff_ids, Path(tree))
        q.put(("won" if os.lstat(p).st_ino == ino else "lost", os.path.exists(tree)))
    except BaseException as e:  # noqa: BLE001
        q.put((repr(e), None))


def test_concurrent_adopt_of_empty_trees_has_one_winner(store):
    """An empty tree is the hard case: a plain rename would replace an empty snapshot."""
    ctx = multiprocessing.get_context("fork")
    q, barrier = ctx.Queue(), ctx.Barrier(4)
    diff_ids = ["sha256:" + "cd" * 32]
    trees = [store.root / f"empty-{i}" for i in range(4)]
    for t in trees:
        t.mkdir()
    Snapshots(store)._db()  # migrate once, before the race
    procs = [ctx.Process(target=_adopt, args=(str(store.root), diff_ids, str(t), barrier, q)) for t in trees]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results == [("lost", False)] * 3 + [("won", False)]
    assert os.listdir(store.root / "snapshots") == [chain_ids(diff_ids)[0][7:]]  # no leftovers


def test_rename_noreplace_refuses_an_empty_directory(tmp_path):
    from runtime import syscalls as sc
    from runtime.errors import SyscallError

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(SyscallError) as e:
        sc.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert e.value.errno == 17  # EEXIST
    sc.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]


def _busybox_only() -> list[tuple]:
    return [("dir", "bin/"), ("file", "bin/busybox", Path("/bin/busybox").read_bytes(), 0o755),
            ("symlink", "bin/sh", "busybox")]


def _listing(upper: Path) -> list[str]:
    return sorted(p.relative_to(upper).as_posix() for p in upper.rglob("*"))


def _step(store, tag: str, script: str, snap: str, mounts=()) -> tuple[int, Path]:
    n = len(list(store.root.glob("u-*")))
    upper, work = store.root / f"u-{n}", store.root / f"w-{n}"
    upper.mkdir()
    work.mkdir()
    status = build.run_step(store, list(store.resolve(tag).config.diff_ids), upper, work,
                            ["/bin/sh", "-c", script], ["PATH=/bin"], None, "/", network="none",
                            mounts=mounts, on_output=lambda b: None, snapshotter=snap)
    return status, upper


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_run_step_removes_the_mount_points_it_made(store, tmp_path, snapshotter):
    """A base without /proc, /dev, /sys, /etc: the layer holds the command's files only."""
    add_image(store, [make_tar(_busybox_only())], tag="bare")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    status, upper = _step(store, "bare", "test -d /proc/self && test -s /etc/hosts && ls /ctx/in >/dev/null && "
                          "mkdir /made && echo x > /made/f && touch /empty", snapshotter,
                          mounts=[(str(ctx), "/ctx/in", True)])
    assert status == 0
    assert _listing(upper) == ["empty", "made", "made/f"]  # an empty file the command made stays


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_run_step_keeps_what_the_command_changed_around_mount_points(store, snapshotter):
    """/etc exists (copied up for the stubs), /etc/hosts links to a missing /var/hosts."""
    add_image(store, [make_tar([*_busybox_only(), ("dir", "etc/"), ("symlink", "etc/hosts", "/var/hosts"),
                                      ("file", "etc/hostname", "base\n"), ("dir", "proc/"), ("dir", "sys/"),
                                      ("dir", "dev/")])], tag="etc")
    status, upper = _step(store, "etc", "true", snapshotter)
    assert status == 0 and _listing(upper) == []
    status, upper = _step(store, "etc", "echo v > /etc/own", snapshotter)
    assert status == 0 and _listing(upper) == ["etc", "etc/own"]
    status, upper = _step(store, "etc", "chmod 700 /etc", snapshotter)
    assert status == 0 and _listing(upper) == ["etc"]
    assert stat.S_IMODE(os.lstat(upper / "etc").st_mode) == 0o700


_HOLDER = """
import sys
from runtime.snapholds import holding
from runtime.snapshots import Snapshots
from storage.images import ImageStore
with holding():
    print(Snapshots(ImageStore(sys.argv[1])).hold(sys.argv[2]), flush=True)
    sys.stdin.read()
"""


def test_a_snapshot_another_process_holds_is_neither_taken_nor_removed(store, layered, tmp_path):
    """A process holding a snapshot (a build's RUN lower, view or COPY donor: runtime/snapholds.py)
    keeps it from a take and from gc in another process until it lets go; a holder that comes
    after a take finds the snapshot gone (to be unpacked again), never the taken tree."""
    import sys

    snaps = Snapshots(store)
    top = chain_ids(layered.config.diff_ids)[-1]
    with holding():
        snaps.prepare_image(layered)
    inode = snaps.path(top).stat().st_ino
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store.root), top], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout.readline() == b"True\n"
        into = store.root / "taken"
        into.mkdir()
        assert not snaps.take(top, into)
        assert snaps.path(top).stat().st_ino == inode and not os.listdir(into)
        assert snaps.remove_unused([top], set) == [] and snaps.has(top)
    finally:
        holder.communicate(b"", timeout=30)
    assert holder.returncode == 0
    assert snaps.take(top, into)
    assert os.lstat(into).st_ino == inode and not snaps.has(top)
    # now nothing is there: a holder says so (prepare unpacks it again)
    again = subprocess.run([sys.executable, "-c", _HOLDER, str(store.root), top], input=b"", capture_output=True,
                           cwd=Path(__file__).parents[2], timeout=30)
    assert again.stdout == b"False\n"
    with holding():
        assert snaps.prepare_image(layered)[-1] == snaps.path(top)
    assert snaps.path(top).stat().st_ino != inode and (snaps.path(top) / "added").read_text() == "added-by-layer-2\n"


def _index_as_before_it_existed(store) -> None:
    """The store as a soko without the container_layers index left it (runtime schema 2)."""
    with store.db.transaction() as c:
        c.execute("DROP TABLE container_layers")
        c.execute("UPDATE schema_versions SET version=2 WHERE component='runtime'")
    store.db.close()


@pytest.mark.parametrize("made", ["now", "before the index"])
def test_a_snapshot_a_container_records_is_not_taken_until_it_is_removed(store, layered, made, monkeypatch):
    """A container (created, never started: no process holds anything) keeps its layers' snapshots
    from a take, found through the store's index of container layers, not by reading every
    container's state; a container made by a soko before that index is found too."""
    from runtime import containers
    from runtime.container import Container
    from runtime.create import create
    from runtime.db import migrated
    from storage.images import ImageStore

    snaps = Snapshots(store)
    top = chain_ids(layered.config.diff_ids)[-1]
    c = create(store, "layered", RunOptions(command=["true"], network="none"))
    c.cdir.unlock()
    other = create(store, "busybox", RunOptions(command=["true"], network="none"))  # shares the bottom layer
    other.cdir.unlock()
    if made != "now":
        _index_as_before_it_existed(store)
        store = ImageStore(store.root)
        snaps = Snapshots(store)
        migrated(store.db)  # the index made and filled from the states
    monkeypatch.setattr(containers, "states", None)  # a take reads no container's state
    inode = snaps.path(top).stat().st_ino
    into = store.root / "taken"
    into.mkdir()
    assert not snaps.take(top, into)
    assert snaps.path(top).stat().st_ino == inode and not os.listdir(into)
    Container.get(store, c.id).delete()
    assert snaps.take(top, into)  # no container records it now
    assert os.lstat(into).st_ino == inode and not snaps.has(top)
    bottom = chain_ids(layered.config.diff_ids)[0]
    (store.root / "empty").mkdir()
    assert not snaps.take(bottom, store.root / "empty")  # still the other container's
    monkeypatch.undo()
    Container.get(store, other.id).delete()
