"""Differential test: soko and `buildah bud --layers --isolation chroot` build the same
fixture Dockerfiles into the same file tree and the same runtime config."""
from __future__ import annotations

import shutil

import pytest

from tests.builder.buildah import Buildah, flatten, flatten_soko, oci_layout_image, runtime_config, tree
from tests.builder.helpers import do_build, import_busybox
from tests.conftest import REPO, need_root

pytestmark = pytest.mark.interop
FIXTURES = REPO / "fixtures" / "dockerfiles"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# buildah's chroot isolation leaves its mount points behind in the image when the
# base lacks them (empty files and an empty /run); BuildKit and soko do not.
BUILDAH_STUBS = {"/etc/hostname", "/etc/resolv.conf", "/etc/hosts", "/run"}


def _buildah_stub(path: str, entry: tuple) -> bool:
    return path in BUILDAH_STUBS and entry[4] in (EMPTY, None)


@pytest.fixture(scope="module")
def env(tmp_path_factory, busybox_rootfs):
    need_root()
    if shutil.which("buildah") is None or shutil.which("skopeo") is None:
        pytest.fail("buildah and skopeo are needed (Debian packages buildah, skopeo)")
    from storage.archives import save
    from storage.images import ImageStore

    base = tmp_path_factory.mktemp("interop")
    store = ImageStore(base / "store")
    import_busybox(store, busybox_rootfs)
    archive = base / "busybox-oci.tar"
    save(store, ["busybox"], archive, fmt="oci")
    bh = Buildah(base / "buildah")
    bh.load_oci_archive(archive, "localhost/soko-busybox:latest")
    yield store, bh, base
    bh.cleanup()


@pytest.mark.parametrize("name", ["basic", "multistage"])
def test_same_tree_and_config_as_buildah(env, name):
    store, bh, base = env
    ctx = base / f"ctx-{name}"
    shutil.copytree(FIXTURES / name, ctx)
    do_build(store, ctx, tags=[f"soko-{name}"])
    bh.bud(ctx, f"localhost/buildah-{name}", {"BASE": "localhost/soko-busybox:latest"})
    layout = bh.export(f"localhost/buildah-{name}", base / f"layout-{name}")
    theirs_config, theirs_layers = oci_layout_image(layout)
    theirs = tree(flatten(theirs_layers, base / f"tree-buildah-{name}"))
    ours_config, ours_root = flatten_soko(store, f"soko-{name}", base / f"tree-soko-{name}")
    ours = tree(ours_root)
    only_ours = sorted(set(ours) - set(theirs))
    only_theirs = sorted(p for p in set(theirs) - set(ours) if not _buildah_stub(p, theirs[p]))
    differ = {p: (ours[p], theirs[p]) for p in sorted(set(ours) & set(theirs)) if ours[p] != theirs[p]}
    assert (only_ours, only_theirs, differ) == ([], [], {})
    assert runtime_config(ours_config) == runtime_config(theirs_config)
