"""Build cache completeness for COPY and ADD (builder/CACHE.md).

Each test builds, changes one input of one COPY/ADD, and rebuilds: exactly
that step misses (with the step after it, whose parent changed), every step
before it hits, and the image holds the new value. A key that left the input
out would hit and keep the old value. Inputs the key must leave out (mtimes,
owners of context files) are changed the same way and must stay hits.
"""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from tests.builder.helpers import ImageFS, do_build, write_context


def missed(b) -> list[str]:
    """Instructions that ran (cache misses), in order."""
    return [e.instruction for e in b.steps if not e.cached]


def dockerfile(step: str, before: str = "FROM busybox\nCOPY base.txt /base\n") -> str:
    return f"{before}{step}\nENV AFTER=1\n"


def rebuild(store, ctx, first_step: str, second_step: str, *, tag: str = "out", before: str | None = None,
            change=None):
    """Build with `first_step`, apply `change`, build with `second_step`; return (first, second)."""
    kw = {} if before is None else {"before": before}
    first = do_build(store, ctx, dockerfile(first_step, **kw), tags=[tag])
    assert missed(first)[-2:] == [first_step, "ENV AFTER=1"]
    if change is not None:
        change()
    second = do_build(store, ctx, dockerfile(second_step, **kw), tags=[tag])
    return first, second


def make_ctx(tmp_path, files: dict[str, str | bytes] | None = None):
    return write_context(tmp_path / "ctx", {
        "base.txt": "base", "a.txt": "A", "b.txt": "B", "one/f": "from one", "two/f": "from two",
        "dir/x": "x", "dir/sub/y": "y", **(files or {})})


# -- inputs that must change the key -----------------------------------------------------
def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# (first instruction, second instruction, what the image shows afterwards)
INSTRUCTION_CHANGES = {
    "chown": ("COPY --chown=1:1 a.txt /a", "COPY --chown=2:3 a.txt /a", lambda fs: fs.owner("/a") == (2, 3)),
    "chmod": ("COPY --chmod=644 a.txt /a", "COPY --chmod=600 a.txt /a", lambda fs: fs.mode("/a") == 0o600),
    "destination": ("COPY a.txt /a", "COPY a.txt /elsewhere",
                    lambda fs: fs.read("/elsewhere") == b"A" and fs.stat("/a") is None),
    "add-a-source": ("COPY a.txt /d/", "COPY a.txt b.txt /d/", lambda fs: fs.read("/d/b.txt") == b"B"),
    "remove-a-source": ("COPY a.txt b.txt /d/", "COPY a.txt /d/",
                        lambda fs: fs.read("/d/a.txt") == b"A" and fs.stat("/d/b.txt") is None),
    # both write /d/f: the last source wins, so the order is part of the result
    "reorder-sources": ("COPY one/f two/f /d/", "COPY two/f one/f /d/",
                        lambda fs: fs.read("/d/f") == b"from one"),
    "copy-then-add-of-a-tar": ("COPY pkg.tar /opt/", "ADD pkg.tar /opt/", lambda fs: (
        fs.read("/opt/inside.txt") == b"unpacked" and fs.stat("/opt/pkg.tar") is None)),
}


@pytest.mark.parametrize("name", INSTRUCTION_CHANGES)
def test_instruction_inputs(store, tmp_path, name):
    first, second, check = INSTRUCTION_CHANGES[name]
    ctx = make_ctx(tmp_path, {"pkg.tar": _tar({"inside.txt": b"unpacked"})})
    _, b = rebuild(store, ctx, first, second)
    assert missed(b) == [second, "ENV AFTER=1"]
    assert check(ImageFS(store, "out"))


def test_file_content_mode_and_directory_mode(store, tmp_path):
    ctx = make_ctx(tmp_path)
    text = dockerfile("COPY dir /dir")
    do_build(store, ctx, text, tags=["out"])
    for change, check in (
            (lambda: (ctx / "dir/x").write_text("changed"), lambda fs: fs.read("/dir/x") == b"changed"),
            (lambda: os.chmod(ctx / "dir/x", 0o751), lambda fs: fs.mode("/dir/x") == 0o751),
            (lambda: os.chmod(ctx / "dir/sub", 0o701), lambda fs: fs.mode("/dir/sub") == 0o701)):
        change()
        b = do_build(store, ctx, text, tags=["out"])
        assert missed(b) == ["COPY dir /dir", "ENV AFTER=1"]
        assert check(ImageFS(store, "out"))


def test_from_stage_content(store, tmp_path):
    ctx = make_ctx(tmp_path, {"s.txt": "first"})
    text = ("FROM busybox AS src\nCOPY s.txt /s.txt\n"
            "FROM busybox\nCOPY base.txt /base\nCOPY --from=src /s.txt /s\nENV AFTER=1\n")
    do_build(store, ctx, text, tags=["out"])
    (ctx / "s.txt").write_text("second")
    b = do_build(store, ctx, text, tags=["out"])
    assert missed(b) == ["COPY s.txt /s.txt", "COPY --from=src /s.txt /s", "ENV AFTER=1"]
    assert ImageFS(store, "out").read("/s") == b"second"


def test_from_stage_owner(store, tmp_path):
    # --from sources keep their owners, so an owner is part of what they copy
    ctx = make_ctx(tmp_path)
    stage = "FROM busybox AS src\nCOPY --chown={} a.txt /a\nFROM busybox\nCOPY base.txt /base\n"
    _, b = rebuild(store, ctx, "COPY --from=src /a /a", "COPY --from=src /a /a", before=stage.format("5:5"))
    assert missed(b) == []
    b = do_build(store, ctx, dockerfile("COPY --from=src /a /a", before=stage.format("6:7")), tags=["out"])
    assert missed(b) == ["COPY --chown=6:7 a.txt /a", "COPY --from=src /a /a", "ENV AFTER=1"]
    assert ImageFS(store, "out").owner("/a") == (6, 7)


def test_from_image_replaced_under_the_same_name(store, tmp_path):
    ctx = make_ctx(tmp_path)
    img_ctx = write_context(tmp_path / "img", {"s.txt": "first"})
    do_build(store, img_ctx, "FROM scratch\nCOPY s.txt /s.txt\n", tags=["provider:1"])
    text = dockerfile("COPY --from=provider:1 /s.txt /s")
    do_build(store, ctx, text, tags=["out"])
    (img_ctx / "s.txt").write_text("second")
    do_build(store, img_ctx, "FROM scratch\nCOPY s.txt /s.txt\n", tags=["provider:1"])
    b = do_build(store, ctx, text, tags=["out"])
    assert missed(b) == ["COPY --from=provider:1 /s.txt /s", "ENV AFTER=1"]
    assert ImageFS(store, "out").read("/s") == b"second"


def test_add_plain_file_then_local_tar(store, tmp_path):
    ctx = make_ctx(tmp_path, {"pkg": b"not an archive"})
    text = dockerfile("ADD pkg /opt/")
    do_build(store, ctx, text, tags=["out"])
    assert ImageFS(store, "out").read("/opt/pkg") == b"not an archive"
    (ctx / "pkg").write_bytes(_tar({"inside.txt": b"unpacked"}))
    b = do_build(store, ctx, text, tags=["out"])
    assert missed(b) == ["ADD pkg /opt/", "ENV AFTER=1"]
    fs = ImageFS(store, "out")
    assert fs.read("/opt/inside.txt") == b"unpacked" and fs.stat("/opt/pkg") is None
    (ctx / "pkg").write_bytes(b"plain again")
    b = do_build(store, ctx, text, tags=["out"])
    assert missed(b) == ["ADD pkg /opt/", "ENV AFTER=1"]
    fs = ImageFS(store, "out")
    assert fs.read("/opt/pkg") == b"plain again" and fs.stat("/opt/inside.txt") is None


# -- inputs that must not change the key ------------------------------------------------
def test_context_mtime_and_owner_stay_hits(store, tmp_path):
    ctx = make_ctx(tmp_path)
    text = dockerfile("COPY a.txt dir /d/")
    first = do_build(store, ctx, text, tags=["out"])
    os.utime(ctx / "a.txt", (1, 1))
    os.utime(ctx / "dir", (2, 2))
    os.chown(ctx / "a.txt", 4242, 4242)  # written as 0:0 whatever the context's owner
    again = do_build(store, ctx, text, tags=["out"])
    assert missed(again) == [] and again.result.image_id == first.result.image_id
    assert ImageFS(store, "out").owner("/d/a.txt") == (0, 0)


def test_from_stage_mtime_stays_a_hit(store, tmp_path):
    ctx = make_ctx(tmp_path)
    text = ("FROM busybox AS src\nARG T\nRUN echo same > /s.txt && touch -d @$T /s.txt\n"
            "FROM busybox\nCOPY base.txt /base\nCOPY --from=src /s.txt /s\nENV AFTER=1\n")
    first = do_build(store, ctx, text, tags=["out"], build_args={"T": "1000000000"})
    again = do_build(store, ctx, text, tags=["out"], build_args={"T": "1500000000"})
    assert missed(again) == ["RUN echo same > /s.txt && touch -d @$T /s.txt"]  # a new mtime, same content
    assert again.result.image_id == first.result.image_id


def test_unrelated_stage_content_stays_a_hit(store, tmp_path):
    ctx = make_ctx(tmp_path)
    text = ("FROM busybox AS src\nCOPY a.txt /a\nCOPY b.txt /b\n"
            "FROM busybox\nCOPY base.txt /base\nCOPY --from=src /a /a\nENV AFTER=1\n")
    do_build(store, ctx, text, tags=["out"])
    (ctx / "b.txt").write_text("changed, but not copied")
    b = do_build(store, ctx, text, tags=["out"])
    assert missed(b) == ["COPY b.txt /b"]
