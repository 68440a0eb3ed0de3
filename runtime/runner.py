"""`soko run`: image + options -> a finished container and its exit status.

The order matters for cleanup: sweep what killed runs left, resolve
everything that can fail cheaply (image, user, command, options) before
anything is created, then create the container directory (locked by this
process, with everything cleanup needs already in its state.json) and its
cgroups, run, and release it all in `finally`.

The root and the /etc files are mounted in the container's own mount
namespace, on mount points shared by all containers of the store
(`<store>/runtime/rootfs`, `<store>/runtime/etc`): each namespace sees only
its own mounts there, and a container needs no directories of its own
except its upper and work directories.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from storage.private import private_dir

from . import cgroups, containers, etc_files, seccomp, spec as specmod, users
from .errors import InvalidOption, StartError
from .layerview import LayerView
from .options import RunOptions, parse_env_entry, parse_env_file
from .snapshots import Snapshots, chain_ids

if TYPE_CHECKING:
    from storage.images import Image, ImageStore

Event = Callable[[str, str], None]
SNAPSHOTTERS = ("auto", "overlay", "copy")
_overlay_broken: str | None = None  # set once overlay failed in this process


def _emit(on_event: Event | None, kind: str, msg: str) -> None:
    if on_event is not None:
        on_event(kind, msg)


def network_mode(opts: RunOptions) -> str:
    return "host" if opts.network == "default" else opts.network


def extra_env(opts: RunOptions) -> list[str]:
    out: list[str] = []
    for f in opts.env_files:
        out += parse_env_file(f)
    for e in opts.env:
        entry = parse_env_entry(e)
        if entry is not None:
            out.append(entry)
    return out


def volume_mounts(store_root: Path, opts: RunOptions) -> tuple[list[specmod.Mount], list[tuple[str, str]]]:
    """User mounts for the spec, and new named volumes to seed from the image."""
    out: list[specmod.Mount] = []
    seed: list[tuple[str, str]] = []
    for v in opts.parsed_volumes():
        if v.named:
            vdir = Path(store_root) / "volumes" / v.source / "_data"
            if not vdir.is_dir():
                private_dir(vdir.parent).joinpath(vdir.name).mkdir(mode=0o755)
                seed.append((v.target, str(vdir)))
            src = str(vdir)
        else:
            src = v.source
            if not os.path.exists(src):
                os.makedirs(src, 0o755, exist_ok=True)  # Docker's -v creates a missing host dir
        opts_ = ["rbind", "rprivate"] + (["ro"] if v.read_only else [])
        if v.named:
            opts_.append("nodev")
        out.append(specmod.Mount(v.target, "bind", src, opts_))
    for t in opts.parsed_tmpfs():
        out.append(specmod.tmpfs_mount(t))
    seen: set[str] = set()
    for m in out:
        key = m.destination.rstrip("/")
        if key in seen:
            raise InvalidOption(f"duplicate mount point: {m.destination}")
        seen.add(key)
    return out, seed


def cgroup_binds(paths: list[str]) -> list[tuple[str, str]]:
    sysinfo = cgroups.system()
    out = []
    for h in sysinfo.hierarchies:
        for p in paths:
            if p.startswith(h.mount.rstrip("/") + "/"):
                out.append((os.path.basename(h.mount), p))
    return out


def resources(opts: RunOptions) -> cgroups.Resources:
    return cgroups.Resources(memory=opts.memory, memory_swap=2 * opts.memory if opts.memory else None,
                             cpus=opts.cpus, pids=-1 if opts.pids_limit == 0 else opts.pids_limit)


def new_container(root: Path, options: RunOptions, image_id: str, image_ref: str,
                  layers: list[str]) -> containers.Container:
    """Create the locked container directory with all cleanup facts in its state."""
    st = containers.new_state(options.name, image_id, image_ref, options.runtime, options.rm)
    st.layers = layers
    if options.runtime == "builtin":
        st.cgroups = cgroups.plan(st.id)
    else:
        from . import executor_oci

        st.oci_binary = executor_oci.binary(options.runtime)
        st.oci_root = executor_oci.state_root(options.runtime)
        st.oci_id = f"soko-{st.id[:32]}"
    return containers.create(root, st)


def run(store: "ImageStore", image: "str | Image", options: RunOptions, *, stdin: int | None = 0,
        stdout: int = 1, stderr: int = 2, on_output: Callable[[bytes], None] | None = None,
        on_event: Event | None = None, snapshotter: str | None = None) -> int:
    """Run `image` with `options`; returns the container's exit status."""
    options.validate()
    snapshotter = snapshotter or os.environ.get("SOKO_SNAPSHOTTER") or "auto"
    if snapshotter not in SNAPSHOTTERS:
        raise InvalidOption(f"unknown snapshotter {snapshotter!r}")
    root = Path(os.path.abspath(store.root))  # mounts and /proc/self/fd checks need absolute paths
    containers.sweep(root, on_event)
    img = store.resolve(image) if isinstance(image, str) else image
    cfg = dict(img.config.config or {})
    args = specmod.process_args(cfg, options)
    env_extra = extra_env(options)
    lowers = Snapshots(store).prepare_image(img, on_event)
    view = LayerView([str(p) for p in reversed(lowers)])
    user = users.resolve(options.user if options.user is not None else cfg.get("User"), view.read_file)
    net = network_mode(options)
    user_mounts, seed = volume_mounts(root, options)
    profile = seccomp.load_for(options.seccomp_choice())
    ref = image if isinstance(image, str) else (img.tags[0] if img.tags else img.id)
    c = new_container(root, options, img.id, ref, chain_ids(img.config.diff_ids))
    try:
        hostname = options.hostname or (etc_files.host_hostname() if net == "host" else c.id[:12])
        env = specmod.merge_env(list(cfg.get("Env") or []), env_extra, hostname, user.home, options.tty)
        return execute(store, c, cfg, options, args, env, user, hostname, user_mounts, seed,
                       [str(p) for p in lowers], snapshotter,
                       stdin=stdin if options.interactive else None, stdout=stdout, stderr=stderr,
                       on_output=on_output, on_event=on_event, want_upper=not options.rm, seccomp_profile=profile)
    finally:
        finish(c, options.rm)


def _shared_dir(root: Path, name: str) -> Path:
    p = root / "runtime" / name
    if not p.is_dir():
        private_dir(p)
    return p


def execute(store: "ImageStore", c: containers.Container, cfg: dict, options: RunOptions, args: list[str],
            env: list[str], user: users.ExecUser, hostname: str, user_mounts: list, seed: list,
            lowers: list[str], snapshotter: str, *, stdin: int | None, stdout: int, stderr: int,
            on_output, on_event: Event | None, upper: Path | None = None, work: Path | None = None,
            want_upper: bool = True, seccomp_profile: "seccomp.Profile | None | str" = "default") -> int:
    """Create cgroups, build the spec and run it with the chosen executor.

    seccomp_profile: a loaded profile, None (unconfined) or a seccomp.load_for() choice."""
    from . import child
    from .executor_builtin import IO, OverlayUnavailable

    global _overlay_broken
    root = Path(os.path.abspath(store.root))  # mounts and /proc/self/fd checks need absolute paths
    net = network_mode(options)
    upper = upper or c.dir / "upper"
    work = work or c.dir / "work"
    for d in (upper, work):
        d.mkdir(mode=0o755, exist_ok=True)
    rootfs_dir = _shared_dir(root, "rootfs")
    etc_dir = _shared_dir(root, "etc")
    sysinfo = cgroups.system()
    builtin = options.runtime == "builtin"
    if builtin:
        cg = cgroups.create(c.id, resources(options))
        cg_path = None
    else:
        cg = cgroups.Cgroups()
        cg_path = ("/" if sysinfo.mode == "v2" else "") + cgroups.relative_path(c.id)
    spec = specmod.build(specmod.SpecInput(
        image_config=cfg, options=options, args=args, env=env, user=user, hostname=hostname,
        cwd=specmod.cwd_of(cfg, options), rootfs=str(rootfs_dir), etc_files=etc_files.mounts(str(etc_dir)),
        mounts=user_mounts, cgroups_path=cg_path, cgroup_mode=sysinfo.mode,
        seccomp=seccomp.load_for(seccomp_profile) if isinstance(seccomp_profile, str) else seccomp_profile))
    seccomp_filter = None
    if builtin and "seccomp" in spec["linux"]:
        seccomp_filter = seccomp.compiled_filter(spec["linux"]["seccomp"], _shared_dir(root, "seccomp"))
    io = IO(stdin=stdin, stdout=stdout, stderr=stderr, on_output=on_output)
    etc = etc_files.contents(hostname, net)

    def started(pid: int) -> None:
        if not c.state.rm:
            c.state.pid = pid
            c.save()

    use_copy = snapshotter == "copy" or (snapshotter == "auto" and _overlay_broken is not None)
    if use_copy and snapshotter == "auto":
        _emit(on_event, "fallback", f"overlayfs unavailable ({_overlay_broken}); using a copy of the layers")
    for attempt in (0, 1):
        if use_copy:
            merged = c.dir / "merged"
            prepare_copy(lowers, upper, merged)
            rootfs = child.Rootfs(str(rootfs_dir), source_dir=str(merged))
        else:
            rootfs = child.Rootfs(str(rootfs_dir), list(reversed(lowers)) or [_empty_lower(root)],
                                  str(upper), str(work), base=str(root))
        rootfs.etc_dir, rootfs.etc_files = str(etc_dir), etc
        try:
            if builtin:
                from . import executor_builtin

                setup = child.ChildSetup(spec, rootfs, cg.paths, _cgroup_mounts(sysinfo, cg.paths), seed,
                                         (0, 1, 2), -1, -1, None, seccomp_filter)
                status = executor_builtin.run(setup, io, started)
            else:
                from . import executor_oci

                status = executor_oci.run(options.runtime, c.dir, c.state.oci_id or "", spec, rootfs, seed, io,
                                          started)
        except OverlayUnavailable as e:
            if attempt or snapshotter == "overlay":
                raise StartError(f"cannot mount the container root: {e}") from None
            _overlay_broken = str(e)
            _emit(on_event, "fallback", f"overlayfs unavailable ({e}); using a copy of the layers")
            use_copy = True
            continue
        if use_copy and want_upper:
            finish_copy(lowers, c.dir / "merged", upper)
        c.state.status = "exited"
        c.state.exit_code = status
        if not c.state.rm:
            c.save()
        return status
    raise StartError("cannot mount the container root")


def _cgroup_mounts(sysinfo: cgroups.System, paths: list[str]):
    from .mounts import CgroupMounts

    return CgroupMounts(sysinfo.mode, cgroup_binds(paths) if sysinfo.mode != "v2" else [])


def _empty_lower(root: Path) -> str:
    return str(_shared_dir(root, "empty"))


def prepare_copy(lowers: list[str], upper: Path, merged: Path) -> None:
    """The copy snapshotter: the layers (and any earlier upper) copied into one tree."""
    from .copy import copy_tree

    if merged.exists():
        containers.remove_dir(merged)
    merged.mkdir(mode=0o755)
    for layer in lowers + [str(upper)]:
        copy_tree(layer, str(merged), layer=True)


def finish_copy(lowers: list[str], merged: Path, upper: Path) -> None:
    """Turn the copied tree's changes into an overlay-form upper directory."""
    from .diff import overlay_diff

    containers.remove_dir(upper)
    upper.mkdir(mode=0o755)
    overlay_diff(LayerView(list(reversed(lowers))), str(merged), str(upper))
    containers.remove_dir(merged)


def finish(c: containers.Container, rm: bool) -> None:
    """Release what the container holds; with --rm, its directory too."""
    try:
        containers.release_resources(c.dir, c.state)
    finally:
        try:
            if rm:
                containers.remove_dir(c.dir)
            else:
                for d in ("work", "merged"):
                    if (c.dir / d).exists():
                        containers.remove_dir(c.dir / d)
                if c.state.status != "exited":
                    c.state.status = "exited"
                    c.save()
        finally:
            c.release()
