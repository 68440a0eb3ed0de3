"""Published ports: `-p [IP:][HOST:]CONTAINER[/PROTO]` and `-P`, resolved to host ports.

A host port is free when no other container holds it (the leases) and the
host lets us bind it now (no process listens there). Port 0 (`-p 80`,
`-p IP::80`, `-P`) takes a free port from the kernel's ephemeral range, as
Docker does. A taken port is refused before anything is made.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from ..errors import InvalidOption
from ..options import parse_publish
from .leases import Port


class PortTaken(InvalidOption):
    """A host port another process or container holds."""


@dataclass(frozen=True)
class Request:
    host_ip: str
    host_ports: tuple[int, ...]  # (0,) for any free port; several: the first free one
    container_port: int
    proto: str


def _range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    first, last = int(lo), int(hi or lo)
    if not (0 < first <= last <= 65535):
        raise InvalidOption(f"invalid port range {text!r}")
    return list(range(first, last + 1))


def requests(publish: list[str], exposed: list[str] = ()) -> list[Request]:
    """The -p texts (then -P's exposed ports, each to a free port) as requests."""
    out: list[Request] = []
    for text in publish:
        ip, host, cport, proto = parse_publish(text)
        if ip:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise InvalidOption(f"invalid IP address {ip!r} in -p {text!r} (IPv4 only)") from None
            if ip == "0.0.0.0":
                ip = ""
        cports = _range(cport)
        hports = _range(host) if host else [0]
        if len(cports) > 1:
            if host and len(hports) != len(cports):
                raise InvalidOption(f"invalid -p {text!r}: the port ranges differ in size")
            for i, c in enumerate(cports):
                out.append(Request(ip, (hports[i] if host else 0,), c, proto))
        else:
            out.append(Request(ip, tuple(hports), cports[0], proto))
    published = {(r.container_port, r.proto) for r in out}
    for e in exposed:  # -P: the exposed ports -p does not publish already, each to a free port
        port, _, proto = e.partition("/")
        if port.isdigit() and (int(port), proto or "tcp") not in published:
            out.append(Request("", (0,), int(port), proto or "tcp"))
    return out


def _overlaps(a: str, b: str) -> bool:
    return not a or not b or a == b


def bindable(ip: str, port: int, proto: str) -> bool:
    """Whether a process could bind ip:port now (nobody listens there)."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            s.bind((ip or "0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if e.errno == errno.EADDRNOTAVAIL:
                raise InvalidOption(f"cannot publish on {ip}: not an address of this host") from None
            raise
    return True


def _free_port(ip: str, proto: str) -> int:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip or "0.0.0.0", 0))
        return s.getsockname()[1]


def resolve(reqs: list[Request], held: list[Port]) -> list[Port]:
    """Host ports for the requests, none of them `held` by another container or bound on the host.

    Raises PortTaken naming the first port that is not free."""
    out: list[Port] = []

    def taken(ip: str, port: int, proto: str) -> bool:
        return any(p.host_port == port and p.proto == proto and _overlaps(p.host_ip, ip) for p in held + out)

    for r in reqs:
        if r.host_ports == (0,):
            for _ in range(100):
                port = _free_port(r.host_ip, r.proto)
                if not taken(r.host_ip, port, r.proto):
                    break
            else:
                raise PortTaken("no free host port")
            out.append(Port(r.host_ip, port, r.container_port, r.proto))
            continue
        for port in r.host_ports:
            if not taken(r.host_ip, port, r.proto) and bindable(r.host_ip, port, r.proto):
                out.append(Port(r.host_ip, port, r.container_port, r.proto))
                break
        else:
            shown = str(r.host_ports[0]) + (f"-{r.host_ports[-1]}" if len(r.host_ports) > 1 else "")
            raise PortTaken(f"Bind for {r.host_ip or '0.0.0.0'}:{shown} failed: port is already allocated")
    return out


def check(reqs: list[Request]) -> None:
    """Refuse now a fixed host port that is taken (before the container is made); `resolve`
    decides again at each start."""
    from .leases import reader

    fixed = [r for r in reqs if r.host_ports != (0,)]
    if not fixed:
        return
    table = reader()
    try:
        held = [p for l in table.all() for p in l.ports] if table is not None else []
    finally:
        if table is not None:
            table.close()
    resolve(fixed, held)
