"""Containers as Docker shows them: `ps` rows, STATUS texts, `inspect` documents.

Docker's wording and field names: "Up 3 seconds (healthy)", "Exited (0) 2
seconds ago", ps's ID/Image/Command/RunningFor/Status/Names fields, and the
container JSON of `docker inspect`.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .render import human_duration

if TYPE_CHECKING:
    from runtime.container import Container

ZERO_TIME = "0001-01-01T00:00:00Z"
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
              "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
              "LocalVolumes": "LOCAL VOLUMES"}
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def _ago(ns: int, now: float) -> float:
    return max(0.0, now - ns / 1e9)


def status_text(c: "Container", now: float | None = None) -> str:
    now = time.time() if now is None else now
    st = c.state
    if st.status == "running":
        text = f"Up {human_duration(_ago(st.started_at, now))}"
        health = (st.health or {}).get("Status")
        if health == "starting":
            text += " (health: starting)"
        elif health in ("healthy", "unhealthy"):
            text += f" ({health})"
        return text
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {human_duration(_ago(st.finished_at, now))} ago"
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {human_duration(_ago(st.finished_at, now))} ago"
    if st.status == "removing":
        return "Removal In Progress"
    if st.status == "dead":
        return "Dead"
    return "Created"


def _go_quote(text: str) -> str:
    """strconv.Quote for the characters a command line holds."""
    return json.dumps(text, ensure_ascii=False)


def command(c: "Container", trunc: bool = True) -> str:
    """Docker's COMMAND: path and args, an arg with a space in single quotes, quoted as a Go string."""
    cfg = c.record.config if c.record else {}
    cmd = " ".join([cfg.get("Path", "")] + [f"'{a}'" if " " in a else a for a in cfg.get("Args") or []])
    if trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return _go_quote(cmd)


def network_name(c: "Container") -> str:
    mode = ((c.record.config if c.record else {}).get("HostConfig") or {}).get("NetworkMode", "default")
    return "bridge" if mode == "default" else mode


def exposed_ports(c: "Container") -> list[str]:
    return sorted(((c.record.config if c.record else {}).get("Config") or {}).get("ExposedPorts") or {},
                  key=_port_key)


def _port_key(key: str) -> tuple:
    port, _, proto = key.partition("/")
    return (int(port) if port.isdigit() else 0, proto)


def port_bindings(c: "Container", lease) -> dict[str, list[dict] | None]:
    """Docker's NetworkSettings.Ports of a running container (its `lease`, c.endpoint()):
    exposed ports, published ones with their host address and port."""
    if lease is None:
        return {}
    out: dict[str, list[dict] | None] = {k: None for k in exposed_ports(c)}
    for p in lease.ports:
        out.setdefault(p.key(), None)
        out[p.key()] = (out[p.key()] or []) + [{"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}]
    return dict(sorted(out.items(), key=lambda kv: _port_key(kv[0])))


def ports_text(c: "Container", lease) -> str:
    """ps's PORTS: `0.0.0.0:8080->80/tcp`, and `443/tcp` for an exposed port nobody published."""
    parts = []
    for key, binds in port_bindings(c, lease).items():
        if binds is None:
            parts.append(key)
        else:
            parts += [f"{b['HostIp']}:{b['HostPort']}->{key}" for b in binds]
    return ", ".join(parts)


def labels(c: "Container") -> dict[str, str]:
    return dict(((c.record.config if c.record else {}).get("Config") or {}).get("Labels") or {})


def ps_fields(c: "Container", trunc: bool = True, now: float | None = None, leases=None) -> dict[str, Any]:
    """The fields of a `ps` row (Docker's names, for --format); `leases`: every
    container's (leases.snapshot()), read once for all the rows."""
    now = time.time() if now is None else now
    rec = c.record
    mounts = (rec.config.get("Mounts") or []) if rec else []
    return {
        "Command": command(c, trunc),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(rec.created / 1e9)) if rec else "",
        "ID": c.id[:12] if trunc else c.id,
        "Image": rec.image_ref if rec else "",
        "Labels": ",".join(f"{k}={v}" for k, v in labels(c).items()),
        "LocalVolumes": str(sum(1 for m in mounts if m.get("Type") == "volume")),
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in mounts),
        "Names": c.name,
        "Networks": network_name(c),
        "Ports": ports_text(c, c.endpoint(leases)),
        "RunningFor": f"{human_duration(_ago(rec.created, now))} ago" if rec else "",
        "Size": "0B",
        "State": c.state.status,
        "Status": status_text(c, now),
    }


def _time(ns: int) -> str:
    from runtime.logfile import rfc3339

    return rfc3339(ns) if ns else ZERO_TIME


def inspect(c: "Container") -> dict[str, Any]:
    """`docker inspect` of a container."""
    rec = c.record
    cfg = rec.config if rec else {}
    st = c.state
    launch = c.launch if (c.dir / "launch.json").exists() else None
    state: dict[str, Any] = {
        "Status": st.status, "Running": st.status in ("running", "restarting"), "Paused": False,
        "Restarting": st.status == "restarting", "OOMKilled": False, "Dead": st.status == "dead",
        "Pid": st.pid if st.status == "running" else 0, "ExitCode": st.exit_code, "Error": st.error,
        "StartedAt": _time(st.started_at), "FinishedAt": _time(st.finished_at)}
    if st.health:
        state["Health"] = st.health
    upper = str(launch.active.upper) if launch else ""
    return {
        "Id": c.id,
        "Created": _time(rec.created) if rec else ZERO_TIME,
        "Path": cfg.get("Path", ""),
        "Args": list(cfg.get("Args") or []),
        "State": state,
        "Image": rec.image if rec else "",
        "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": str(c.log_path),
        "Name": "/" + c.name,
        "RestartCount": st.restart_count,
        "Driver": launch.snapshotter if launch else "",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": cfg.get("HostConfig") or {},
        "GraphDriver": {"Data": {"LowerDir": ":".join(launch.active.lowers) if launch else "",
                                 "UpperDir": upper, "WorkDir": str(launch.active.work) if launch else "",
                                 "MergedDir": ""},
                        "Name": launch.snapshotter if launch else ""},
        "Mounts": cfg.get("Mounts") or [],
        "Config": cfg.get("Config") or {},
        "NetworkSettings": network_settings(c),
    }


def network_settings(c: "Container") -> dict[str, Any]:
    """Docker's NetworkSettings: the address, gateway, MAC and ports of a running container on a
    bridge network (the top-level copies for the default `bridge` only, as Docker has them)."""
    name = network_name(c)
    lease = c.endpoint()
    plan = c.launch.network if (c.dir / "launch.json").exists() else {}
    endpoint = {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": plan.get("network_id", ""),
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": None}
    if plan.get("dns"):
        endpoint["Aliases"] = list(plan.get("names") or [])[1:]
    if lease is not None:
        endpoint.update({"EndpointID": lease.endpoint, "Gateway": lease.gateway, "IPAddress": lease.address,
                         "IPPrefixLen": lease.prefix, "MacAddress": lease.mac})
    top = endpoint if name == "bridge" else {}
    return {"Bridge": "", "SandboxID": c.id if lease else "", "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0, "Ports": port_bindings(c, lease),
            "SandboxKey": c.state.netns if lease else "", "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None, "EndpointID": top.get("EndpointID", ""),
            "Gateway": top.get("Gateway", ""), "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": top.get("IPAddress", ""), "IPPrefixLen": top.get("IPPrefixLen", 0), "IPv6Gateway": "",
            "MacAddress": top.get("MacAddress", ""), "Networks": {name: endpoint}}
