"""Linux bridges for soko's networks, and subnets that do not collide with the host's routes.

A bridge is made when the first container joins its network. A user-defined
network's `br-<id>` is deleted with its last container (so a store that is
thrown away leaves none behind); the default `soko0` stays, as Docker's
docker0 does, and saves every later container its creation.
Its gateway address is the network's; route_localnet lets the host's own
127.0.0.1 reach a published port through it (firewall.py).
"""
from __future__ import annotations

import ipaddress

from ..errors import ContainerError
from .nl import Netlink

DEFAULT_BRIDGE = "soko0"
SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B
# Docker's default address pools, in its order: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
POOLS = [f"172.{n}.0.0/16" for n in range(17, 32)] + [f"192.168.{n}.0/20" for n in range(0, 256, 16)]


class NetworkConfigError(ContainerError):
    pass


def bridge_name(network_id: str, name: str) -> str:
    return DEFAULT_BRIDGE if name == "bridge" else f"br-{network_id[:12]}"


def host_routes(nl: Netlink, skip_dev: int | None = None) -> list[ipaddress.IPv4Network]:
    out = []
    for dst, plen, dev in nl.routes():
        if plen == 0 or (skip_dev is not None and dev == str(skip_dev)):
            continue
        try:
            net = ipaddress.ip_network(f"{dst}/{plen}", strict=False)
        except ValueError:
            continue
        if not net.is_loopback and not net.is_multicast and not net.is_link_local:
            out.append(net)
    return out


def choose_subnet(taken: list[str], nl: Netlink | None = None) -> str:
    """The first pool that overlaps neither a route of the host nor a subnet in `taken`."""
    own = nl is None
    nl = nl or Netlink()
    try:
        used = host_routes(nl) + [ipaddress.ip_network(t) for t in taken if t]
    finally:
        if own:
            nl.close()
    for pool in POOLS:
        net = ipaddress.ip_network(pool)
        if not any(net.overlaps(u) for u in used):
            return pool
    raise NetworkConfigError("could not find an available, non-overlapping IPv4 address pool among the "
                             "defaults to assign to the network")


def gateway_of(subnet: str) -> str:
    return str(next(ipaddress.ip_network(subnet).hosts()))


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def address_of(name: str) -> tuple[str, str] | None:
    """(subnet, address) of link `name`'s IPv4 address as `ensure` finds it, read with two ioctls
    (no netlink, no pyroute2); None without such a link or address."""
    import fcntl
    import socket
    import struct

    req = struct.pack("16s24x", name.encode()[:15])  # struct ifreq
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            addr = socket.inet_ntoa(fcntl.ioctl(s, SIOCGIFADDR, req)[20:24])  # ifr_addr's sin_addr
            mask = socket.inet_ntoa(fcntl.ioctl(s, SIOCGIFNETMASK, req)[20:24])
        except OSError:
            return None
    return str(ipaddress.ip_network(f"{addr}/{mask}", strict=False)), addr


def ensure(nl: Netlink, name: str, subnet: str, gateway: str) -> tuple[int, str, str]:
    """The bridge's (index, subnet, gateway), making it first when it is missing.

    An existing bridge keeps the address it has (another store may have made `soko0`)."""
    index = nl.link_index(name)
    if index is not None:
        for addr, plen in nl.addresses(index):
            net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
            return index, str(net), addr
        nl.add_address(index, gateway, ipaddress.ip_network(subnet).prefixlen)
        return index, subnet, gateway
    net = ipaddress.ip_network(subnet)
    for route in host_routes(nl):
        if net.overlaps(route):
            raise NetworkConfigError(f"the subnet {subnet} of bridge {name} overlaps with the host's route "
                                     f"to {route}; remove the network and create it with another --subnet")
    nl.add_bridge(name)
    index = nl.link_index(name)
    try:
        nl.add_address(index, gateway, net.prefixlen)
        _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
        nl.set_up(index)
    except BaseException:
        nl.delete_link(name)
        raise
    return index, subnet, gateway


def forwarding_on(state_dir: str) -> None:
    """ip_forward on; its old value kept in the state directory until the last container goes."""
    import os

    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        old = f.read().strip()
    saved = os.path.join(state_dir, "ip_forward")
    if old != "1":
        if not os.path.exists(saved):
            with open(saved, "w") as f:
                f.write(old)
        _sysctl(path, "1")


def forwarding_restore(state_dir: str) -> None:
    import os

    saved = os.path.join(state_dir, "ip_forward")
    try:
        with open(saved) as f:
            old = f.read().strip()
    except FileNotFoundError:
        return
    _sysctl("/proc/sys/net/ipv4/ip_forward", old)
    os.unlink(saved)
