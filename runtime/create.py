"""Creating a container: everything that can fail cheaply fails before anything is made.

The image, command, user, mounts and options are resolved first; then the
container's directory is made (locked by this process, with everything
cleanup needs already in its state.json), holding its init layer (the mount
points its image lacks, initlayer.py), its launch plan (launch.py) and, for
a user's container, its record (records.py). Build steps use `make` with
their own upper directory and no record.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from storage.private import private_dir

from . import apiconfig, cgroups, containers, etc_files, initlayer, records, seccomp, spec as specmod, users
from .container import Container, sweep
from .errors import InvalidOption
from .launch import Launch, resources, shared_dir
from .layerview import LayerView
from .options import RunOptions, parse_env_entry, parse_env_file
from .snapholds import holding
from .snapshots import Snapshots, chain_ids
from .snapshotter import Active

if TYPE_CHECKING:
    from storage.images import Image, ImageStore

Event = Callable[[str, str], None]
SNAPSHOTTERS = ("auto", "overlay", "copy")


def network_mode(opts: RunOptions) -> str:
    """none, host, or the name of a bridge network ("bridge" by default, as Docker's)."""
    return "bridge" if opts.network == "default" else opts.network


def network_plan(store: "ImageStore", options: RunOptions, cid: str, name: str, cfg: dict) -> dict:
    """The container's network as its launch plan keeps it ({} for none and host); its ports are
    checked now, so a taken one fails before anything is made."""
    mode = network_mode(options)
    if mode in ("none", "host"):
        return {}
    from .network import networks, ports
    from .network.endpoint import Plan

    net = networks.default_bridge(store.db) if mode == "bridge" else networks.get(store.db, mode)
    if net.driver != "bridge":
        options.network = "none" if net.driver == "null" else net.driver
        return {}
    user = net.name != "bridge"
    if user:
        options.network = net.name  # as HostConfig.NetworkMode names it (an ID prefix was given, maybe)
    if options.network_aliases and not user:
        raise InvalidOption("network-scoped alias is supported only for containers in user defined networks")
    exposed = sorted((cfg.get("ExposedPorts") or {})) if options.publish_all else []
    plan = Plan(net.id, net.name, net.bridge, net.subnet, net.gateway, dns=user,
                names=[name, *options.network_aliases, cid[:12]] if user else [],
                publish=list(options.publish), exposed=exposed, store=str(store.root))
    ports.check(ports.requests(plan.publish, plan.exposed))
    from dataclasses import asdict

    return asdict(plan)


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


def snapshotter_choice(name: str | None) -> str:
    name = name or os.environ.get("SOKO_SNAPSHOTTER") or "auto"
    if name not in SNAPSHOTTERS:
        raise InvalidOption(f"unknown snapshotter {name!r}")
    return name


def create(store: "ImageStore", image: "str | Image", options: RunOptions, *, on_event: Event | None = None,
           snapshotter: str | None = None) -> Container:
    """A new container from `image` (`docker create`), locked by this process."""
    with holding():  # its snapshots, until its state records them (snapholds; Snapshots.take)
        return _create(store, image, options, on_event, snapshotter)


def _create(store: "ImageStore", image: "str | Image", options: RunOptions, on_event: Event | None,
            snapshotter: str | None) -> Container:
    from .service import RestartPolicy, healthcheck, parse_signal

    options.validate()
    snap = snapshotter_choice(snapshotter)
    root = Path(os.path.abspath(store.root))  # mounts and /proc/self/fd checks need absolute paths
    sweep(store, on_event)
    img = store.resolve(image) if isinstance(image, str) else image
    cfg = dict(img.config.config or {})
    args = specmod.process_args(cfg, options)
    env_extra = extra_env(options)
    lowers = [str(p) for p in reversed(Snapshots(store).prepare_image(img, on_event))]
    view = LayerView(lowers)
    user = users.resolve(options.user if options.user is not None else cfg.get("User"), view.read_file)
    user_mounts, seed = volume_mounts(root, options)
    profile = seccomp.load_for(options.seccomp_choice())
    hc = healthcheck(cfg.get("Healthcheck"), options.health_cmd, options.health_interval, options.health_timeout,
                     options.health_start_period, options.health_retries, options.no_healthcheck)
    restart = RestartPolicy.parse(options.restart)
    ref = image if isinstance(image, str) else (img.tags[0] if img.tags else img.id)
    cid = containers.new_id()
    name = options.name.lstrip("/") if options.name else records.generate_name(store.db)
    net_plan = network_plan(store, options, cid, name, cfg)
    hostname = options.hostname or (etc_files.host_hostname() if network_mode(options) == "host" else cid[:12])
    env = specmod.merge_env(list(cfg.get("Env") or []), env_extra, hostname, user.home, options.tty)
    conf = apiconfig.config(cfg, options, args, hostname, env_extra, ref, hc)
    record = records.Record(cid, name, img.id, ref, containers.now_ns(), {
        "Path": args[0], "Args": args[1:], "Config": conf,
        "HostConfig": apiconfig.host_config(options, restart.to_json()),
        "Mounts": apiconfig.mounts(options, str(root)), "ManifestDigest": img.digest})
    service = {"restart": restart.to_json(), "healthcheck": hc,
               "stop_signal": parse_signal(conf.get("StopSignal")), "stop_timeout": options.stop_timeout,
               "open_stdin": options.interactive}
    cdir, launch = make(store, cid=cid, options=options, cfg=cfg, args=args, env=env, user=user,
                        hostname=hostname, user_mounts=user_mounts, seed=seed, lowers=lowers,
                        layers=chain_ids(img.config.diff_ids), snapshotter=snap, seccomp_profile=profile,
                        record=record, service=service, network=net_plan,
                        hold=[] if options.rm else [img.digest])
    c = Container(store, cdir, record)
    c._launch = launch
    return c


def make(store: "ImageStore", *, cid: str, options: RunOptions, cfg: dict, args: list[str], env: list[str],
         user: users.ExecUser, hostname: str, user_mounts: list[specmod.Mount], seed: list[tuple[str, str]],
         lowers: list[str], layers: list[str], snapshotter: str, seccomp_profile: "seccomp.Profile | None",
         upper: Path | None = None, work: Path | None = None, record: records.Record | None = None,
         service: dict | None = None, network: dict | None = None, save_launch: bool = True,
         stub_user_mounts: bool = False, hold: list[str] = ()) -> tuple[containers.ContainerDir, Launch]:
    """The container's directory (locked), init layer, record and launch plan.

    `lowers` are the image's snapshot directories, top first; `upper`/`work` default to
    directories in the container's own. The init layer holds the runtime's own mount points;
    a user's -v targets go into the container's change, as Docker's `diff` shows them, but a
    build step's mounts must not end up in its layer (`stub_user_mounts`). `hold`: digests
    (its image's manifest) that `soko gc` must keep while the container exists."""
    root = Path(os.path.abspath(store.root))
    final = containers.containers_dir(root) / cid
    netns_path = ""
    if network:
        from .network.netns import path_of

        netns_path = path_of(cid)
    state = containers.State(cid, options.runtime, options.rm, containers.now_ns(), owner=os.getpid(),
                             layers=list(layers), netns=netns_path)
    sysinfo = cgroups.system()
    cg_path = None
    oci_id = None
    if options.runtime == "builtin":
        state.cgroups = cgroups.plan(cid)
    else:
        from . import executor_oci

        state.oci_binary = executor_oci.binary(options.runtime)
        state.oci_root = executor_oci.state_root(options.runtime)
        state.oci_id = oci_id = f"soko-{cid[:32]}"
        cg_path = ("/" if sysinfo.mode == "v2" else "") + cgroups.relative_path(cid)
    spec = specmod.build(specmod.SpecInput(
        image_config=cfg, options=options, args=args, env=env, user=user, hostname=hostname,
        cwd=specmod.cwd_of(cfg, options), rootfs=str(shared_dir(root, "rootfs")),
        etc_files=etc_files.mounts(str(shared_dir(root, "etc"))), mounts=user_mounts, cgroups_path=cg_path,
        cgroup_mode=sysinfo.mode, seccomp=seccomp_profile, netns_path=netns_path or None))
    filter_file = None
    if options.runtime == "builtin" and "seccomp" in spec["linux"]:
        filter_file = seccomp.compiled_filter_file(spec["linux"]["seccomp"], shared_dir(root, "seccomp"))
    active = Active([str(final / "init")] + list(lowers), upper or final / "upper", work or final / "work",
                    final / "merged")
    launch = Launch(cid, options.runtime, spec, snapshotter, active, str(root),
                    etc_files.contents(hostname, network_mode(options),
                                       (network or {}).get("gateway", "") if (network or {}).get("dns") else ""),
                    list(seed), resources(options.memory, options.cpus, options.pids_limit), filter_file, oci_id,
                    service or {}, dict(network or {}))

    def fill(tmp: Path) -> None:
        initlayer.make(tmp / "init", LayerView(lowers), initlayer.targets(user_mounts if stub_user_mounts else []))
        if record is not None:
            records.insert(store.db, record, layers)
        if hold:
            store.hold(hold_owner(cid), hold)
        if save_launch:
            launch.save(tmp)

    try:
        cdir = containers.create_dir(root, state, fill)
    except BaseException:
        if record is not None:
            records.delete(store.db, cid)
        if hold:
            store.release(hold_owner(cid))
        raise
    return cdir, launch


def hold_owner(cid: str) -> str:
    return f"container:{cid}"
