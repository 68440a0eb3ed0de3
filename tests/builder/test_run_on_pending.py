"""A RUN after a COPY starts on the COPY's finished tree while the COPY's layer (tar, digest, blob)
is still being written (layerio.Pending); the executor records the COPY once the layer is there.
The image, the cache and the snapshots must be what a COPY recorded at once gives, and a failure of
either step must leave the store as a build that did them one after the other leaves it."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

import runtime.build
from builder import DockerfileError, RunFailed, StepError, layerio
from runtime.snapshots import Snapshots, chain_ids
from storage.errors import ImageNotFound, LayerError
from storage.images import ImageStore
from tests.builder.helpers import ImageFS, do_build, import_busybox, write_context

EPOCH = 1_700_000_000
DF = "FROM busybox\nCOPY src/ /app/src/\nRUN cat /app/src/a.txt /app/src/b.txt > /out\n"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write_context(tmp_path / "ctx", {"src/a.txt": "a\n", "src/b.txt": "b\n"})


def _cache_rows(store: ImageStore) -> list[tuple]:
    return sorted(store.db.query("SELECT key, diff_id FROM builder_cache"))


def _staged(store: ImageStore) -> list[str]:
    tmp = Path(store.root) / "builder" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def test_the_run_starts_while_the_copy_layer_is_written_and_sees_its_tree(store, ctx, tmp_path, monkeypatch,
                                                                          busybox_rootfs):
    started = threading.Event()
    waited: list[bool] = []
    write_dir, run_step = layerio.write_dir, runtime.build.run_step

    def slow_write_dir(*args, **kw):
        waited.append(started.wait(5))  # the RUN's container starts meanwhile (never, when run in turn)
        return write_dir(*args, **kw)

    def spied_run_step(*args, **kw):
        started.set()
        return run_step(*args, **kw)

    monkeypatch.setattr(layerio, "write_dir", slow_write_dir)
    monkeypatch.setattr(runtime.build, "run_step", spied_run_step)
    do_build(store, ctx, DF, tags=["app"], source_date_epoch=EPOCH)
    assert waited == [True]
    assert ImageFS(store, "app").read("/out") == b"a\nb\n"
    img = store.resolve("app")
    assert [h["created_by"] for h in img.config.history[-2:]] == [
        "COPY src/ /app/src/ # buildkit", "RUN /bin/sh -c cat /app/src/a.txt /app/src/b.txt > /out # buildkit"]
    assert len(img.config.diff_ids) == len(img.manifest.layers) == len(img.config.history)
    # the COPY's tree became its snapshot, the RUN's on top of it; staging is gone
    for chain in chain_ids(list(img.config.diff_ids))[-2:]:
        assert Snapshots(store).has(chain)
    assert _staged(store) == []
    monkeypatch.undo()
    # the COPY's layer is the one a COPY with no RUN after it makes (recorded at once)
    alone = ImageStore(tmp_path / "alone")
    import_busybox(alone, busybox_rootfs)
    do_build(alone, ctx, "FROM busybox\nCOPY src/ /app/src/\n", tags=["copy"], source_date_epoch=EPOCH)
    assert alone.resolve("copy").config.diff_ids[-1] == img.config.diff_ids[-2]
    # both steps are in the cache, as if recorded one after the other
    again = do_build(store, ctx, DF, tags=["app"], source_date_epoch=EPOCH)
    assert [s.cached for s in again.steps] == [True, True, True]
    assert store.resolve("app").manifest.digest == img.manifest.digest


def test_a_copy_layer_that_cannot_be_written_fails_the_copy_and_records_nothing(store, ctx, monkeypatch):
    do_build(store, ctx, "FROM busybox\nRUN true\n")  # the base is ready; only the COPY and RUN below are new
    before = _cache_rows(store)
    ran = threading.Event()
    run_step = runtime.build.run_step

    def failing_write_dir(*args, **kw):
        ran.wait(5)
        raise LayerError("cannot write layer: No space left on device")

    def spied_run_step(*args, **kw):
        ran.set()
        return run_step(*args, **kw)

    monkeypatch.setattr(layerio, "write_dir", failing_write_dir)
    monkeypatch.setattr(runtime.build, "run_step", spied_run_step)
    with pytest.raises(StepError) as e:
        do_build(store, ctx, DF, tags=["app"])
    # the COPY's error (its line), though the RUN after it had started
    assert str(e.value) == "Dockerfile:2: COPY: cannot write layer: No space left on device"
    assert ran.is_set()
    assert _cache_rows(store) == before
    assert _staged(store) == []
    with pytest.raises(ImageNotFound):
        store.resolve("app")
    monkeypatch.undo()
    built = do_build(store, ctx, DF, tags=["app"])
    assert [s.cached for s in built.steps] == [True, False, False]


def test_a_failing_run_on_a_pending_copy_still_records_the_copy(store, ctx):
    with pytest.raises(RunFailed) as e:
        do_build(store, ctx, "FROM busybox\nCOPY src/ /app/src/\nRUN cat /app/src/a.txt; exit 7\n", tags=["app"])
    assert e.value.exit_code == 7 and e.value.output == ["a"]
    assert _staged(store) == []
    fixed = do_build(store, ctx, DF, tags=["app"])
    assert [s.cached for s in fixed.steps] == [True, True, False]  # FROM, the COPY (recorded), the new RUN
    assert ImageFS(store, "app").read("/out") == b"a\nb\n"


def test_a_trigger_that_fails_after_a_copy_trigger_leaves_no_layer_being_written(store, ctx):
    """An image's ONBUILD list may hold a trigger that only fails once parsed (made by another
    tool): the COPY trigger before it is recorded, its writer finished, its staging removed."""
    from storage import mediatypes as mt

    base = store.resolve("busybox")
    config = base.config.changed()
    config.config["OnBuild"] = ["COPY src/ /app/src/", "FROM busybox"]
    store.tag("parent:1", store.commit(config, list(base.manifest.layers), mt.OCI_MANIFEST).digest)
    threads = threading.active_count()
    with pytest.raises(DockerfileError, match="FROM isn't allowed as an ONBUILD trigger"):
        do_build(store, ctx, "FROM parent:1\nRUN true\n")
    assert _staged(store) == [] and threading.active_count() == threads
    # the COPY trigger ran and was recorded, as it is when nothing is written in a thread
    assert len(_cache_rows(store)) == 1


def test_the_layer_writer_leaves_no_database_connection_open(store, ctx):
    """The writer thread's SQLite connection (one per thread) is closed when it is done: left to the
    cyclic collector it closed its descriptors at some later moment, in whatever the process (a
    long-lived test worker, say) was doing then."""
    import gc
    import os

    do_build(store, ctx, DF)
    (ctx / "src" / "a.txt").write_text("edited\n")
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        do_build(store, ctx, DF)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()
