"""Published ports: `-p [IP:][HOST:]CONTAINER[/PROTO]` and `-P`, resolved to host ports.

A host port is free when no other container holds it (the leases) and the
host lets us bind it now. While a container publishes it, its owner holds it
with a socket of its own (`hold`), as Docker's port reservation does, so no
other program takes it and has its traffic sent to the container. Port 0
(`-p 80`, `-p IP::80`, `-P`) takes a free port from the kernel's ephemeral
range, as Docker does. A taken port is refused before anything is made.
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


def hold(ip: str, port: int, proto: str) -> socket.socket | None:
    """A socket bound to ip:port (and listening, for TCP) that keeps every other program from
    taking the port while a container publishes it, as Docker's port reservation does: the
    DNAT rule would take such a program's traffic. Nothing reaches it (the rule sends every
    packet for a local address on to the container). None when the port is taken; port 0
    takes a free one."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        s.bind((ip or "0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
    except OSError as e:
        s.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        if e.errno == errno.EADDRNOTAVAIL:
            raise InvalidOption(f"cannot publish on {ip}: not an address of this host") from None
        raise
    return s


def resolve(reqs: list[Request], held: list[Port]) -> tuple[list[Port], list[socket.socket]]:
    """Host ports for the requests, none of them `held` by another container or bound on the
    host, and the sockets that hold them (see `hold`; the caller closes them when the container
    gives the ports up). Raises PortTaken naming the first port that is not free."""
    out: list[Port] = []
    socks: list[socket.socket] = []

    def taken(ip: str, port: int, proto: str) -> bool:
        return any(p.host_port == port and p.proto == proto and _overlaps(p.host_ip, ip) for p in held + out)

    try:
        for r in reqs:
            for port in (r.host_ports if r.host_ports != (0,) else [0] * 100):
                if port and taken(r.host_ip, port, r.proto):
                    continue
                s = hold(r.host_ip, port, r.proto)
                if s is None:
                    continue
                port = s.getsockname()[1]
                if taken(r.host_ip, port, r.proto):  # a free port the kernel chose, that a container holds
                    s.close()
                    continue
                socks.append(s)
                out.append(Port(r.host_ip, port, r.container_port, r.proto))
                break
            else:
                if r.host_ports == (0,):
                    raise PortTaken("no free host port")
                shown = str(r.host_ports[0]) + (f"-{r.host_ports[-1]}" if len(r.host_ports) > 1 else "")
                raise PortTaken(f"Bind for {r.host_ip or '0.0.0.0'}:{shown} failed: port is already allocated")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return out, socks


def check(reqs: list[Request]) -> None:
    """Refuse now a fixed host port that is taken (before the container is made); `resolve`
    decides again at each start."""
    from .leases import snapshot

    fixed = [r for r in reqs if r.host_ports != (0,)]
    if not fixed:
        return
    held = [p for l in snapshot().values() for p in l.ports]
    for s in resolve(fixed, held)[1]:
        s.close()
