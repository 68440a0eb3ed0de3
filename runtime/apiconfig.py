"""A container's configuration as Docker's API has it: Path, Args, Config, HostConfig, Mounts.

Decided once, when the container is created, from the image's config and
the run options, and kept in its record: `inspect` shows it, `ps` reads its
command and labels, `commit` starts the new image's config from it.
"""
from __future__ import annotations

from typing import Any

from . import spec as specmod
from .options import RunOptions


def config(image_cfg: dict, opts: RunOptions, args: list[str], hostname: str, env_extra: list[str],
           image_ref: str, healthcheck: dict | None) -> dict[str, Any]:
    """Docker's Config: the image's config with the run options applied."""
    env = list(image_cfg.get("Env") or [])
    for e in env_extra:
        key = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != key] + [e]
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else None
        cmd = list(opts.command) or None
    else:
        entry = image_cfg.get("Entrypoint") or None
        cmd = list(opts.command) if opts.command else (image_cfg.get("Cmd") or None)
    labels = dict(image_cfg.get("Labels") or {})
    labels.update(opts.parsed_labels())
    exposed = dict(image_cfg.get("ExposedPorts") or {})
    from .options import parse_publish

    for p in opts.publish:
        _ip, _host, cport, proto = parse_publish(p)
        exposed[f"{cport}/{proto}"] = {}
    out: dict[str, Any] = {
        "Hostname": hostname, "Domainname": "", "User": opts.user if opts.user is not None else
        (image_cfg.get("User") or ""),
        "AttachStdin": opts.interactive and not opts.detach, "AttachStdout": not opts.detach,
        "AttachStderr": not opts.detach, "Tty": bool(opts.tty), "OpenStdin": bool(opts.interactive),
        "StdinOnce": bool(opts.interactive and not opts.detach), "Env": env or None, "Cmd": cmd,
        "Image": image_ref, "Volumes": image_cfg.get("Volumes") or None,
        "WorkingDir": opts.workdir or image_cfg.get("WorkingDir") or "", "Entrypoint": entry,
        "OnBuild": image_cfg.get("OnBuild") or None, "Labels": labels,
    }
    if exposed:
        out["ExposedPorts"] = exposed
    stop = opts.stop_signal or image_cfg.get("StopSignal")
    if stop:
        out["StopSignal"] = stop
    if opts.stop_timeout is not None:
        out["StopTimeout"] = opts.stop_timeout
    if healthcheck:
        out["Healthcheck"] = healthcheck
    return out


def host_config(opts: RunOptions, restart: dict) -> dict[str, Any]:
    """Docker's HostConfig for what soko's run options cover (the rest at Docker's defaults)."""
    from .options import parse_publish

    bindings: dict[str, list] = {}
    for p in opts.publish:
        ip, host, cport, proto = parse_publish(p)
        bindings.setdefault(f"{cport}/{proto}", []).append({"HostIp": ip, "HostPort": host})
    network = "default" if opts.network == "default" else opts.network
    return {
        "Binds": list(opts.volumes) or None, "ContainerIDFile": "",
        "LogConfig": {"Type": "json-file", "Config": {}}, "NetworkMode": network,
        "PortBindings": bindings, "RestartPolicy": restart, "AutoRemove": bool(opts.rm),
        "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
        "CgroupnsMode": "private" if _cgroup_mode() == "v2" else "host", "Dns": [], "DnsOptions": [],
        "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "",
        "Links": None, "OomScoreAdj": 0, "PidMode": "", "Privileged": False,
        "PublishAllPorts": bool(opts.publish_all), "ReadonlyRootfs": bool(opts.read_only),
        "SecurityOpt": list(opts.security_opt) or None, "Tmpfs": _tmpfs(opts), "UTSMode": "",
        "UsernsMode": "", "ShmSize": 67108864, "Runtime": opts.runtime, "Isolation": "",
        "CpuShares": 0, "Memory": opts.memory or 0, "NanoCpus": int((opts.cpus or 0) * 1e9),
        "CgroupParent": "", "MemorySwap": 2 * opts.memory if opts.memory else 0,
        "PidsLimit": opts.pids_limit, "MaskedPaths": list(specmod.MASKED_PATHS),
        "ReadonlyPaths": list(specmod.READONLY_PATHS),
    }


def _cgroup_mode() -> str:
    from . import cgroups

    return cgroups.system().mode


def _tmpfs(opts: RunOptions) -> dict | None:
    if not opts.tmpfs:
        return None
    return {t.target: ",".join(t.options) for t in opts.parsed_tmpfs()}


def mounts(opts: RunOptions, store_root: str) -> list[dict[str, Any]]:
    """Docker's Mounts list: binds, named volumes and tmpfs mounts."""
    import os

    out = []
    for v in opts.parsed_volumes():
        common = {"Destination": v.target, "Mode": "ro" if v.read_only else "", "RW": not v.read_only,
                  "Propagation": "rprivate"}
        if v.named:
            out.append({"Type": "volume", "Name": v.source, "Source": os.path.join(
                store_root, "volumes", v.source, "_data"), "Driver": "local", **common, "Mode": "z"
                if not v.read_only else "ro"})
        else:
            out.append({"Type": "bind", "Source": v.source, **common})
    for t in opts.parsed_tmpfs():
        out.append({"Type": "tmpfs", "Source": "", "Destination": t.target, "Mode": ",".join(t.options),
                    "RW": True, "Propagation": ""})
    return out
