"""The no-change fast path (builder/fastpath.py): a rebuild answered from a recorded fingerprint,
and every input whose change must send the build down the full path instead."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from builder import BuildOptions, build, fastpath
from builder.cache import BuildCache
from builder.secrets import SecretSource
from tests.builder.helpers import ImageFS, import_busybox, write_context
from tests.builder.servers import HTTPServer

DF = "FROM busybox\nWORKDIR /app\nCOPY src/ ./src/\nCOPY top.txt .\nRUN cat src/a.txt > /joined\nCMD [\"sh\"]\n"


def settle() -> None:
    """Past the racy window: what was just written is old enough for a fingerprint to vouch for."""
    time.sleep(0.05)


@pytest.fixture
def ctx(tmp_path):
    d = write_context(tmp_path / "ctx", {"Dockerfile": DF, "src/a.txt": "a\n", "src/b/c.txt": "c\n",
                                         "top.txt": "top\n"})
    settle()
    return d


class Run:
    """`soko build` as the command does it: the fast path first, the full build (recording) otherwise."""

    def __init__(self, store):
        self.store = store

    def __call__(self, ctx: Path, **kw) -> tuple[str, str, list]:
        """('fast' | 'full', image ID, the events shown)."""
        opts = BuildOptions(context=ctx, **kw)
        opts.validate()
        probe = fastpath.probe(opts)
        replay = fastpath.replay(self.store, opts, probe) if probe is not None else None
        if replay is not None:
            return "fast", replay.image_id, replay.events
        events: list = []
        result = build(self.store, opts, events.append, probe=probe)
        return "full", result.image_id, events


@pytest.fixture
def run(store):
    return Run(store)


def shown(events) -> list[tuple]:
    """What `soko build` prints of the events: step lines (with CACHED) and messages."""
    return [(e.kind, e.header() if e.kind == "step" else e.text, e.cached) for e in events
            if e.kind in ("step", "warning", "notice") or (e.kind == "done" and not e.metadata and not e.cached)]


# -- the answer ----------------------------------------------------------------------------------
def test_a_rebuild_is_answered_with_what_the_full_build_gives_and_shows(store, run, ctx):
    how, first, _ = run(ctx, tags=["app:1"], build_args={"UNUSED": "x"})
    assert how == "full"
    store.tag("app:1", store.resolve("busybox").digest)  # moved away: the fast path tags it again
    how, again, events = run(ctx, tags=["app:1"], build_args={"UNUSED": "x"})
    assert (how, again) == ("fast", first)
    assert store.resolve("app:1").id == first
    # the same lines a full build that hits every step shows (the warning included)
    full = build(store, BuildOptions(context=ctx, tags=["app:1"], build_args={"UNUSED": "x"}), (ev := []).append)
    assert full.image_id == first and full.cached == full.steps
    assert shown(events) == shown(ev)
    assert [asdict(e) for e in events if e.kind == "step"] == [asdict(e) for e in ev if e.kind == "step"]
    assert any(e.kind == "warning" and "UNUSED" in e.text for e in events)


def test_the_fast_path_keeps_cache_entries_in_use(store, run, ctx):
    run(ctx)
    cache = BuildCache(store)
    store.db.execute("UPDATE builder_cache SET last_used=0")
    assert run(ctx)[0] == "fast"
    assert cache.prune(older_than=3600) == 0  # each entry the build looked up was marked used


# -- what defeats it -----------------------------------------------------------------------------
def rewrite_same_size_and_mtime(path: Path, data: str) -> None:
    st = os.stat(path)
    assert len(data.encode()) == st.st_size
    path.write_text(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("change", [
    "dockerfile", "content same size and mtime", "new file", "removed file", "renamed file", "chmod",
    "dockerignore", "dockerfile dockerignore",
])
def test_a_changed_input_goes_the_full_way(store, run, ctx, change):
    how, first, _ = run(ctx, tags=["app"])
    assert run(ctx, tags=["app"])[0] == "fast"
    if change == "dockerfile":
        (ctx / "Dockerfile").write_text(DF.replace('"sh"', '"ls"'))
    elif change == "content same size and mtime":
        rewrite_same_size_and_mtime(ctx / "src/a.txt", "A\n")
    elif change == "new file":
        (ctx / "src/b/new.txt").write_text("new\n")
    elif change == "removed file":
        (ctx / "src/b/c.txt").unlink()
    elif change == "renamed file":
        (ctx / "src/b/c.txt").rename(ctx / "src/b/d.txt")
    elif change == "chmod":
        (ctx / "top.txt").chmod(0o600)
    elif change == "dockerignore":
        (ctx / ".dockerignore").write_text("src/b\n")
    elif change == "dockerfile dockerignore":
        (ctx / "Dockerfile.dockerignore").write_text("src/b\n")
    settle()
    how, second, _ = run(ctx, tags=["app"])
    assert how == "full"
    if change != "content same size and mtime":
        # (an mtime set back on an old file fools the stat cache of the full build, as it fools
        # BuildKit's: only the ctime tells, which the fingerprint has; the racy case is below)
        assert second != first
    assert run(ctx, tags=["app"])[:2] == ("fast", second)


def test_a_racy_file_is_not_vouched_for(store, run, ctx):
    """A file written within the racy window of the walk may change again unseen (same size, same
    mtime tick): that build records nothing, and the change is seen."""
    run(ctx, tags=["app"])
    (ctx / "src/a.txt").write_text("1\n")
    # racy whenever the walk comes (a loaded machine may take longer than the 20 ms window to
    # start the build): an mtime ahead of the clock, as a file written in the same tick has
    ahead = time.time_ns() + 3_600_000_000_123
    os.utime(ctx / "src/a.txt", ns=(ahead, ahead))
    how, first, _ = run(ctx, tags=["app"])
    assert how == "full"
    rewrite_same_size_and_mtime(ctx / "src/a.txt", "2\n")
    how, second, _ = run(ctx, tags=["app"])
    assert how == "full" and second != first
    assert ImageFS(store, "app").read("/joined") == b"2\n"


def test_racy_by_the_clock(tmp_path):
    """The fingerprint notices a fresh file itself (mtime or ctime within the window of the walk)."""
    ctx = write_context(tmp_path / "c", {"Dockerfile": "FROM busybox\n", "f": "x"})
    assert fastpath.probe(BuildOptions(context=ctx)).racy
    settle()
    assert not fastpath.probe(BuildOptions(context=ctx)).racy
    os.utime(ctx / "f", (1, 1))  # an old mtime set now: the ctime is new
    assert fastpath.probe(BuildOptions(context=ctx)).racy


def test_build_args_target_labels_and_tags_are_their_own_builds(store, run, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox AS one\nARG V=0\nRUN echo $V > /v\nFROM one AS two\nRUN true\n")
    settle()
    variants = [{}, {"build_args": {"V": "1"}}, {"target": "one"}, {"labels": {"a": "b"}}, {"tags": ["other"]}]
    ids = []
    for kw in variants:
        how, image, _ = run(ctx, **kw)
        assert how == "full"
        ids.append(image)
    for kw, image in zip(variants, ids):
        assert run(ctx, **kw)[:2] == ("fast", image)
    assert len(set(ids[:4])) == 4


def make_image(store, tmp_path: Path, tag: str, dockerfile: str) -> None:
    empty = tmp_path / f"empty-{tag}"
    empty.mkdir(exist_ok=True)
    build(store, BuildOptions(context=empty, dockerfile_text=dockerfile, tags=[tag]))


def test_a_base_image_tagged_anew(store, run, ctx, tmp_path):
    first = run(ctx, tags=["app"])[1]
    assert run(ctx, tags=["app"])[0] == "fast"
    make_image(store, tmp_path, "busybox:latest", "FROM busybox\nRUN echo new base > /marker\n")
    how, second, _ = run(ctx, tags=["app"])
    assert how == "full" and second != first
    assert ImageFS(store, "app").read("/marker") == b"new base\n"


def test_an_image_named_by_copy_from(store, run, ctx, tmp_path):
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY --from=donor /donor /donor\n")
    settle()
    make_image(store, tmp_path, "donor", "FROM busybox\nRUN echo one > /donor\n")
    first = run(ctx, tags=["app"])[1]
    assert run(ctx, tags=["app"])[:2] == ("fast", first)
    make_image(store, tmp_path, "donor", "FROM busybox\nRUN echo two > /donor\n")
    how, second, _ = run(ctx, tags=["app"])
    assert how == "full" and ImageFS(store, "app").read("/donor") == b"two\n"


def test_no_cache_and_what_only_a_build_can_answer_are_never_fast(store, run, ctx, tmp_path):
    run(ctx)
    assert fastpath.probe(BuildOptions(context=ctx, no_cache=True)) is None
    assert fastpath.probe(BuildOptions(context=ctx, dockerfile_text="FROM busybox\n")) is None
    from builder import Output
    from builder.cachespec import parse_from, parse_to

    assert fastpath.probe(BuildOptions(context=ctx, output=[Output("oci", str(tmp_path / "o.tar"))])) is None
    assert fastpath.probe(BuildOptions(context=ctx, cache_to=[parse_to(f"type=local,dest={tmp_path}/c")])) is None
    assert fastpath.probe(BuildOptions(context=ctx, cache_from=[parse_from("busybox")])) is None


def test_a_build_with_no_cache_rewrites_the_answer(store, run, ctx):
    """--no-cache writes new entries under the same keys: the recorded answer no longer holds."""
    first = run(ctx, tags=["app"])[1]
    assert run(ctx, tags=["app"])[0] == "fast"
    time.sleep(1.1)  # history timestamps have whole seconds
    rebuilt = build(store, BuildOptions(context=ctx, tags=["app"], no_cache=True)).image_id
    assert rebuilt != first
    how, image, _ = run(ctx, tags=["app"])
    assert (how, image) == ("full", rebuilt)


def test_a_pruned_build_cache(store, run, ctx):
    run(ctx, tags=["app"])
    BuildCache(store).prune()
    assert run(ctx, tags=["app"])[0] == "full"  # its steps run again
    assert run(ctx, tags=["app"])[0] == "fast"


def test_a_removed_image(store, run, ctx):
    first = run(ctx, tags=["app"])[1]
    store.remove("app")
    assert run(ctx, tags=["app"])[:2] == ("full", first)  # stored again from the cache
    assert run(ctx, tags=["app"])[:2] == ("fast", first)


def test_a_collected_layer(store, run, ctx):
    run(ctx, tags=["app"])
    os.unlink(store.blobs.path(store.resolve("app").manifest.layers[-1].digest))
    assert run(ctx, tags=["app"])[0] == "full"
    assert run(ctx, tags=["app"])[0] == "fast"


def test_secrets_sources_are_part_of_the_options_and_values_of_nothing(store, run, ctx, tmp_path):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /n\n")
    settle()
    (tmp_path / "a").write_text("secret-one")
    (tmp_path / "b").write_text("secret-two!")
    spec = lambda f: [SecretSource.parse(f"id=tok,src={tmp_path / f}")]  # noqa: E731
    first = run(ctx, secrets=spec("a"))[1]
    assert run(ctx, secrets=spec("a"))[:2] == ("fast", first)
    (tmp_path / "a").write_text("another value")
    # a new value is no reason to run again, on either path (no key holds a secret)
    assert run(ctx, secrets=spec("a"))[:2] == ("fast", first)
    full = build(store, BuildOptions(context=ctx, secrets=spec("a")))
    assert full.image_id == first and full.cached == full.steps
    assert run(ctx, secrets=spec("b"))[0] == "full"  # another source: other options


def test_ssh_agent_sockets_are_part_of_the_options(store, run, ctx, tmp_path):
    import socket

    from builder.secrets import SshSource

    socks = []
    for name in ("a.sock", "b.sock"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / name))
        socks.append(s)
    try:
        agent = lambda n: [SshSource.parse(f"default={tmp_path / n}")]  # noqa: E731
        first = run(ctx, ssh=agent("a.sock"))[1]
        assert run(ctx, ssh=agent("a.sock"))[:2] == ("fast", first)
        assert run(ctx, ssh=agent("b.sock"))[0] == "full"
        assert run(ctx)[0] == "full"
    finally:
        for s in socks:
            s.close()


def test_excluded_directories_are_not_walked(store, run, ctx):
    (ctx / ".dockerignore").write_text("cache\nkept\n!kept/yes.txt\n")
    for d in ("cache", "kept"):
        (ctx / d).mkdir()
        (ctx / d / "x.txt").write_text("x\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY . /all/\n")
    settle()
    first = run(ctx, tags=["app"])[1]
    (ctx / "cache" / "x.txt").write_text("changed, and ignored\n")
    settle()
    assert run(ctx, tags=["app"])[:2] == ("fast", first)
    (ctx / "kept" / "yes.txt").write_text("brought back by an exception\n")
    settle()
    how, second, _ = run(ctx, tags=["app"])
    assert how == "full" and ImageFS(store, "app").read("/all/kept/yes.txt") == b"brought back by an exception\n"


def test_url_sources_are_never_recorded(store, run, ctx, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "d.txt").write_text("remote\n")
    srv = HTTPServer(www)
    try:
        (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {srv.url}/d.txt /d.txt\n")
        settle()
        run(ctx)
        assert run(ctx)[0] == "full"
        (www / "d.txt").write_text("remote, changed\n")
        run(ctx, tags=["app"])
        assert ImageFS(store, "app").read("/d.txt") == b"remote, changed\n"
    finally:
        srv.close()


MULTI = """FROM busybox AS lib
RUN echo lib > /lib.txt
FROM busybox AS base
RUN echo base > /base.txt
FROM base
COPY --from=lib /lib.txt /
COPY top.txt /
"""


def test_multi_stage_answers_show_what_a_cached_build_shows(store, run, ctx):
    (ctx / "Dockerfile").write_text(MULTI)
    settle()
    how, first, cold = run(ctx)
    assert how == "full" and any(e.stage == "lib" for e in cold if e.kind == "step")
    # the cold build showed `lib`, which a cached build does not: the answer shows what the latter does
    how, again, replayed = run(ctx)
    assert (how, again) == ("fast", first) and not any(e.stage == "lib" for e in replayed if e.kind == "step")
    full = build(store, BuildOptions(context=ctx), (cached := []).append)
    assert full.image_id == first and full.cached == full.steps
    assert shown(replayed) == shown(cached)
    assert [{**asdict(e), "elapsed": 0} for e in replayed if e.kind in ("step", "done")] == \
        [{**asdict(e), "elapsed": 0} for e in cached if e.kind in ("step", "done")]


def test_a_chain_of_stages_is_recorded_by_its_first_build(store, run, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox AS a\nRUN echo a > /a\nFROM a AS b\nCOPY top.txt /\n")
    settle()
    first = run(ctx)[1]
    how, again, replayed = run(ctx)
    assert (how, again) == ("fast", first)
    full = build(store, BuildOptions(context=ctx), (ev := []).append)
    assert full.cached == full.steps and shown(replayed) == shown(ev)


def test_a_store_without_records(store_root, busybox_rootfs, ctx):
    from storage.images import ImageStore

    s = ImageStore(store_root)
    import_busybox(s, busybox_rootfs)
    opts = BuildOptions(context=ctx)
    assert fastpath.replay(s, opts, fastpath.probe(opts)) is None  # no table yet: nothing to answer


def test_a_dockerfile_outside_the_context_and_its_ignore_file(store, run, ctx, tmp_path):
    elsewhere = tmp_path / "build"
    elsewhere.mkdir()
    (elsewhere / "app.Dockerfile").write_text(DF)
    settle()
    first = run(ctx, dockerfile=elsewhere / "app.Dockerfile", tags=["app"])[1]
    assert run(ctx, dockerfile=elsewhere / "app.Dockerfile", tags=["app"])[:2] == ("fast", first)
    (elsewhere / "app.Dockerfile.dockerignore").write_text("src/b/c.txt\n")  # a file: the same walk
    settle()
    how, second, _ = run(ctx, dockerfile=elsewhere / "app.Dockerfile", tags=["app"])
    assert how == "full" and second != first and ImageFS(store, "app").stat("/app/src/b/c.txt") is None
    (elsewhere / "app.Dockerfile").write_text(DF.replace('"sh"', '"ls"'))
    settle()
    assert run(ctx, dockerfile=elsewhere / "app.Dockerfile", tags=["app"])[0] == "full"


def test_a_context_too_big_to_walk_is_built_as_usual(store, run, ctx, monkeypatch):
    monkeypatch.setattr(fastpath, "MAX_ENTRIES", 5)
    assert fastpath.probe(BuildOptions(context=ctx)) is None
    first = run(ctx)[1]
    assert run(ctx)[:2] == ("full", first)
    monkeypatch.setattr(fastpath, "MAX_ENTRIES", 50)
    assert run(ctx)[:2] == ("full", first) and run(ctx)[:2] == ("fast", first)


def test_a_record_this_soko_cannot_read_is_no_answer(store, run, ctx):
    first = run(ctx)[1]
    store.db.execute("UPDATE builder_fastpath SET record='{not json'")
    assert run(ctx)[:2] == ("full", first)  # and it is recorded again
    store.db.execute("UPDATE builder_fastpath SET record='{\"images\": 5}'")
    assert run(ctx)[:2] == ("full", first)
    assert run(ctx)[:2] == ("fast", first)


def test_a_build_after_the_fingerprint_does_not_list_the_context_again(store, run, ctx, monkeypatch, tmp_path):
    """The fingerprint's walk lists every directory of the context; the full build that follows
    walks that listing (Probe.listing) instead of listing them again, and builds what a build
    without a fingerprint builds."""
    (ctx / ".dockerignore").write_text("cache\nkept\n!kept/yes.txt\n")
    for d in ("cache", "kept"):
        (ctx / d).mkdir()
        (ctx / d / "x.txt").write_text("x\n")
    (ctx / "kept" / "yes.txt").write_text("yes\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY . /all/\n")
    settle()
    listed = []
    real = os.listdir

    def listdir(path="."):
        where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else os.path.abspath(path)
        if where == str(ctx) or where.startswith(f"{ctx}/"):
            listed.append(where)
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    epoch = 1_700_000_000
    how, first, _ = run(ctx, tags=["app"], source_date_epoch=epoch)
    assert how == "full"
    assert sorted(listed) == sorted(f"{ctx}{d}" for d in ("", "/kept", "/src", "/src/b"))  # the fingerprint's walk only
    listed.clear()
    result = build(store, BuildOptions(context=ctx, tags=["plain"], source_date_epoch=epoch, no_cache=True))
    assert listed  # without a fingerprint, the build lists what it walks
    assert result.image_id == first
    assert ImageFS(store, "app").read("/all/kept/yes.txt") == b"yes\n"
    assert ImageFS(store, "app").read("/all/cache/x.txt") is None
