"""What the builder needs from the runtime: run one RUN step, read image files.

A RUN step is a container whose root is the given layers plus an upper
directory the builder owns: after the step, that directory *is* the step's
change (the mount points the runtime needs are made in the container's init
layer beneath it, see initlayer.py), in overlayfs form (whiteouts as 0/0
character devices, opaque directories marked), ready for
storage.layers.write_layer_from_overlay.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from . import containers, seccomp, spec as specmod, users
from .container import Container, sweep
from .create import make, snapshotter_choice
from .errors import InvalidOption
from .layerview import LayerView
from .options import RunOptions
from .runner import foreground
from .snapshots import Snapshots, chain_ids

if TYPE_CHECKING:
    from storage.images import ImageStore


def _mounts(mounts: Iterable) -> list[specmod.Mount]:
    out: list[specmod.Mount] = []
    for m in mounts:
        if isinstance(m, specmod.Mount):
            out.append(m)
            continue
        src, dst, *rest = m
        ro = bool(rest[0]) if rest else False
        if not str(dst).startswith("/"):
            raise InvalidOption(f"mount target {dst!r} must be absolute")
        out.append(specmod.Mount(str(dst), "bind", str(src), ["rbind", "rprivate"] + (["ro"] if ro else [])))
    return out


def run_step(store: "ImageStore", diff_ids: list[str], upper: Path, work: Path, argv: list[str],
             env: list[str], user: str | None, workdir: str, network: str = "host",
             mounts: Iterable = (), on_output: Callable[[bytes], None] | None = None, *,
             on_event: Callable[[str, str], None] | None = None, hostname: str | None = None,
             snapshotter: str | None = None, top: Path | None = None) -> int:
    """Run `argv` on layers `diff_ids` (bottom first) + `top` + `upper`; returns the exit status.

    `top`, when given, is one more layer's finished tree (in overlay form) above `diff_ids`
    that is not a snapshot yet: the builder starts a RUN on a COPY's tree while that COPY's
    layer is still being written (builder/layerio.Pending); it must not change while the
    step runs, and stays the caller's.

    `upper` and `work` are empty directories on the same filesystem as the
    store (work is overlayfs scratch space; both stay the caller's). `env`
    is the full environment (PATH added when missing, HOME from passwd);
    `user` is USER's text (None: root); `workdir` is created when missing;
    `network` is "host" or "none"; `mounts` are spec.Mount objects or
    (host source, container target[, read_only]) tuples; `upper` holds
    only the command's change, no empty mount points. Output (stdout and
    stderr together) goes to `on_output`, or to soko's own stdout/stderr
    when it is None. stdin is /dev/null."""

    if network not in ("host", "none"):
        raise InvalidOption(f"network {network!r} is not supported for build steps (host or none)")
    if not argv:
        raise InvalidOption("a RUN step needs a command")
    snap = snapshotter_choice(snapshotter)
    sweep(store, on_event)
    lowers = [str(p) for p in reversed(Snapshots(store).prepare(list(diff_ids), on_event=on_event))]
    if top is not None:
        lowers.insert(0, str(top))
    view = LayerView([str(upper)] + lowers)
    exec_user = users.resolve(user, view.read_file)
    options = RunOptions(command=list(argv), user=user, workdir=workdir or "/", network=network, rm=True)
    options.validate()
    user_mounts = _mounts(mounts)
    cid = containers.new_id()
    name = hostname or cid[:12]
    full_env = specmod.merge_env(list(env), [], name, exec_user.home, False)
    if not any(e.startswith("HOSTNAME=") for e in env):  # a build step has none (BuildKit sets none)
        full_env = [e for e in full_env if not e.startswith("HOSTNAME=")]
    cdir, launch = make(store, cid=cid, options=options, cfg={}, args=list(argv), env=full_env, user=exec_user,
                        hostname=name, user_mounts=user_mounts, seed=[], lowers=lowers,
                        layers=chain_ids(diff_ids), snapshotter=snap, seccomp_profile=seccomp.load_for("default"),
                        upper=Path(upper), work=Path(work), save_launch=False, stub_user_mounts=True)
    c = Container(store, cdir)
    c._launch = launch
    return foreground(c, stdin=None, stdout=1, stderr=2, on_output=on_output, on_event=on_event,
                      before_release=lambda: _commit(launch))


def _commit(launch) -> None:
    """The copy snapshotter's tree compared into `upper`; nothing to do for overlay."""
    from . import snapshotter

    if launch.snapshotter == "copy":
        snap = snapshotter.get("copy")
        snap.commit(launch.active)
        snap.remove(launch.active)


def layer_view(store: "ImageStore", diff_ids: list[str],
               on_event: Callable[[str, str], None] | None = None) -> LayerView:
    """The merged tree of `diff_ids` (bottom first) for reading, unpacking snapshots as needed."""
    lowers = Snapshots(store).prepare(list(diff_ids), on_event=on_event)
    return LayerView([str(p) for p in reversed(lowers)])


def read_file(store: "ImageStore", diff_ids: list[str], path: str, limit: int = 16 << 20) -> bytes | None:
    """A file of the image made of `diff_ids`, symlinks resolved inside the image; None if absent."""
    return layer_view(store, diff_ids).read_file(path, limit)


def resolve_user(store: "ImageStore", diff_ids: list[str], spec: str | None) -> users.ExecUser:
    """`user[:group]` through the image's own /etc/passwd and /etc/group (COPY --chown, USER)."""
    return users.resolve(spec, layer_view(store, diff_ids).read_file)
