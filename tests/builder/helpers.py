"""Helpers for builder tests: write a context, build it, look at the result."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from builder import BuildEvent, BuildOptions, build
from storage.images import ImageStore


@dataclass
class Built:
    result: object
    events: list[BuildEvent] = field(default_factory=list)

    @property
    def steps(self) -> list[BuildEvent]:
        return [e for e in self.events if e.kind == "step"]

    @property
    def output(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "output"]


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def do_build(store: ImageStore, context: Path, dockerfile: str | None = None, **kw) -> Built:
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
    events: list[BuildEvent] = []
    opts = BuildOptions(context=context, **kw)
    result = build(store, opts, events.append)
    return Built(result, events)


def config_of(store: ImageStore, ref: str) -> dict:
    return store.resolve(ref).config.data


def import_busybox(store: ImageStore, rootfs: Path, name: str = "busybox:latest") -> str:
    from storage.rootfs_import import import_rootfs

    m = import_rootfs(store, rootfs, {"Cmd": ["sh"]})
    store.tag(name, m.digest)
    return name


class ImageFS:
    """The merged filesystem of a built image, read through its layers."""

    def __init__(self, store: ImageStore, ref: str):
        from runtime.build import layer_view

        self.image = store.resolve(ref)
        self.view = layer_view(store, list(self.image.config.diff_ids))

    def stat(self, path: str, follow: bool = False) -> os.stat_result | None:
        _, e = self.view.resolve(path, follow_last=follow)
        return e.st if e else None

    def read(self, path: str) -> bytes | None:
        return self.view.read_file(path)

    def readlink(self, path: str) -> str:
        _, e = self.view.resolve(path, follow_last=False)
        return os.readlink(e.host_path)

    def mode(self, path: str) -> int:
        import stat
        st = self.stat(path)
        assert st is not None, f"{path} missing"
        return stat.S_IMODE(st.st_mode)

    def owner(self, path: str) -> tuple[int, int]:
        st = self.stat(path)
        assert st is not None, f"{path} missing"
        return st.st_uid, st.st_gid
