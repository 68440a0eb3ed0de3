"""The classic example end to end: Debian base, apt-get, a script entrypoint, a cow saying moo."""
from __future__ import annotations

import shutil

import pytest

from tests.builder.helpers import do_build
from tests.conftest import REPO, need_root

FIXTURE = REPO / "fixtures" / "dockerfiles" / "cowsay"


@pytest.fixture(scope="module")
def built(tmp_path_factory, bookworm_rootfs):
    need_root()
    from storage.images import ImageStore
    from storage.rootfs_import import import_rootfs

    root = tmp_path_factory.mktemp("classic")
    store = ImageStore(root / "store")
    m = import_rootfs(store, bookworm_rootfs)
    store.tag("bookworm:minbase", m.digest)
    ctx = root / "ctx"
    shutil.copytree(FIXTURE, ctx)
    first = do_build(store, ctx, tags=["cowsay"])
    return store, ctx, first


def _run(store, *args: str) -> tuple[int, str]:
    from runtime.options import RunOptions
    from runtime.runner import run

    out: list[bytes] = []
    code = run(store, "cowsay", RunOptions(command=list(args), rm=True, network="none"),
               stdin=None, on_output=out.append)
    return code, b"".join(out).decode()


def test_cow_says_moo(built):
    store, _, first = built
    assert [e.cached for e in first.steps] == [True, False, False, False]
    code, out = _run(store, "moo")
    assert code == 0, out
    assert "< moo >" in out and "(oo)" in out


def test_without_arguments_a_fortune(built):
    store, _, _ = built
    code, out = _run(store)
    assert code == 0, out
    assert "(oo)" in out and "< moo >" not in out


def test_image_config_and_history(built):
    store, _, first = built
    img = store.resolve("cowsay")
    assert img.config.config["Entrypoint"] == ["/entrypoint.sh"]
    assert len(img.manifest.layers) == 3
    created_by = [h["created_by"] for h in img.config.data["history"]][-3:]
    assert created_by == ["RUN /bin/sh -c apt-get update && apt-get install -y cowsay fortune # buildkit",
                          "COPY entrypoint.sh / # buildkit",
                          'ENTRYPOINT ["/entrypoint.sh"]']


def test_rebuild_reports_every_step_cached(built):
    store, ctx, first = built
    again = do_build(store, ctx, tags=["cowsay"])
    assert [e.cached for e in again.steps] == [True] * len(again.steps)
    assert again.result.image_id == first.result.image_id
    assert not [e for e in again.events if e.kind == "output"]
