"""Networks as the store keeps them: `soko network create|ls|inspect|rm|prune`.

Each store has Docker's three predefined networks (bridge, host, none) and
the bridge networks its user creates, with their IPAM configuration (subnet
and gateway). Names are the store's; subnets are the host's: each is claimed
in the host's subnet claims (subnets.py) so that no two networks of any
stores overlap. The default `bridge` network is the host's `soko0`, shared by
every store: its subnet is chosen when it is first needed (the first of
Docker's pools no route or claim of the host overlaps) and follows `soko0`
when another store made it. What runs on a network (addresses, ports) is in
the host's leases (leases.py).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ContainerError, InvalidOption
from ..options import NETWORK_NAME

if TYPE_CHECKING:
    from storage.metadata import MetadataDB

    from .nl import Netlink
    from .subnets import Claims

PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}


class NoSuchNetwork(ContainerError):
    status = 1


class NetworkInUse(ContainerError):
    status = 1


def _predefined(c: sqlite3.Connection) -> None:
    now = time.time_ns()
    for name, driver in PREDEFINED.items():
        c.execute("INSERT INTO networks(id, name, driver, subnet, gateway, created) VALUES(?,?,?,?,?,?)",
                  (os.urandom(32).hex(), name, driver, "", "", now))


MIGRATIONS = [
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        subnet TEXT NOT NULL,
        gateway TEXT NOT NULL,
        created INTEGER NOT NULL,
        internal INTEGER NOT NULL DEFAULT 0,
        labels TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}'
    );
    """,
    _predefined,
]


@dataclass
class Network:
    id: str
    name: str
    driver: str  # bridge | host | null
    subnet: str
    gateway: str
    created: int  # ns since the epoch
    internal: bool = False
    labels: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def bridge(self) -> str:
        from .bridge import bridge_name

        return bridge_name(self.id, self.name)

    @classmethod
    def from_row(cls, row) -> "Network":
        d = dict(row)
        d["internal"] = bool(d["internal"])
        d["labels"] = json.loads(d["labels"])
        d["options"] = json.loads(d["options"])
        return cls(**d)


def _db(db: "MetadataDB") -> "MetadataDB":
    db.migrate("network", MIGRATIONS)
    return db


def all_networks(db: "MetadataDB") -> list[Network]:
    return [Network.from_row(r) for r in _db(db).query("SELECT * FROM networks ORDER BY name")]


def get(db: "MetadataDB", ref: str) -> Network:
    """By name, full ID or unique ID prefix, as Docker resolves networks."""
    _db(db)
    row = db.one("SELECT * FROM networks WHERE name=? OR id=?", (ref, ref))
    if row is None and re.match(r"^[0-9a-f]+$", ref):
        rows = db.query("SELECT * FROM networks WHERE id LIKE ?", (ref + "%",))
        if len(rows) == 1:
            row = rows[0]
    if row is None:
        raise NoSuchNetwork(f"network {ref} not found")
    return Network.from_row(row)


def _store(db: "MetadataDB") -> str:
    return os.path.dirname(os.path.abspath(db.path))


def _default_claim(claims: "Claims", nl: "Netlink", own: list[str]) -> tuple[str, str]:
    """soko0's (subnet, gateway): its address when it exists, else its claim, else the first pool
    no route, claim or network of this store (`own`) overlaps, claimed now for every store."""
    from .bridge import DEFAULT_BRIDGE, choose_subnet, gateway_of
    from .subnets import HOST, Claim

    index = nl.link_index(DEFAULT_BRIDGE)
    existing = nl.addresses(index) if index is not None else []
    if existing:
        addr, plen = existing[0]
        subnet, gateway = str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)), addr
    else:
        held = claims.get(DEFAULT_BRIDGE)
        if held is not None:
            return held.subnet, gateway_of(held.subnet)
        subnet = choose_subnet([c.subnet for c in claims.live()] + own, nl)
        gateway = gateway_of(subnet)
    held = claims.get(DEFAULT_BRIDGE)
    if held is None or held.subnet != subnet:
        claims.claim(Claim(DEFAULT_BRIDGE, subnet, HOST, "", "bridge"))
    return subnet, gateway


def default_bridge(db: "MetadataDB") -> Network:
    """The `bridge` network (the host's soko0, every store's), its subnet taken from the host's
    claims on first use."""
    net = get(db, "bridge")
    if net.subnet:
        return net
    from .leases import host_lock
    from .nl import Netlink
    from .subnets import Claims

    own = [n.subnet for n in all_networks(db) if n.subnet and n.name != "bridge"]
    with host_lock(), Claims() as claims, Netlink() as nl:
        subnet, gateway = _default_claim(claims, nl, own)
    db.execute("UPDATE networks SET subnet=?, gateway=? WHERE id=?", (subnet, gateway, net.id))
    net.subnet, net.gateway = subnet, gateway
    return net


def create(db: "MetadataDB", name: str, subnet: str | None = None, gateway: str | None = None,
           driver: str = "bridge", labels: dict | None = None, internal: bool = False) -> Network:
    """A new bridge network (`docker network create`), its subnet claimed on the host."""
    if driver != "bridge":
        raise InvalidOption(f"plugin \"{driver}\" not found (soko has the bridge driver)")
    if not re.match(NETWORK_NAME, name):
        raise InvalidOption(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    net = _parse_subnet(subnet) if subnet else None
    gw = _parse_address(gateway, "gateway") if gateway else None
    if gw is not None and net is None:
        raise InvalidOption("a --gateway needs a --subnet")
    from .leases import host_lock
    from .nl import Netlink
    from .subnets import Claims

    with host_lock(), Claims() as claims, Netlink() as nl:
        others = all_networks(db)
        if any(n.name == name for n in others):
            raise InvalidOption(f"network with name {name} already exists")
        own = [n for n in others if n.subnet and n.name != "bridge"]
        _default_claim(claims, nl, [n.subnet for n in own])
        held = claims.live()
        if net is not None:
            _check_free(net, own, held, nl)
            chosen = str(net)
        else:
            from .bridge import choose_subnet

            chosen = choose_subnet([n.subnet for n in own] + [c.subnet for c in held], nl)
        new = _insert(db, name, driver, chosen, gw, internal, labels)
        from .subnets import Claim

        claims.claim(Claim(new.bridge, new.subnet, _store(db), new.id, new.name))
    return new


def _check_free(net: ipaddress.IPv4Network, own: list[Network], held: list, nl: "Netlink") -> None:
    """Refuse a --subnet that overlaps a network of this store, another store's or a host route."""
    from .bridge import host_routes

    for other in own:
        if net.overlaps(ipaddress.ip_network(other.subnet)):
            raise InvalidOption(f"Pool overlaps with other one on this address space ({other.name}: "
                                f"{other.subnet})")
    for c in held:
        if c.overlaps(str(net)):
            raise InvalidOption(f"Pool overlaps with other one on this address space ({c.describe()})")
    for route in host_routes(nl):
        if net.overlaps(route):
            raise InvalidOption(f"subnet {net} overlaps with the host's route to {route}")


def _insert(db: "MetadataDB", name: str, driver: str, subnet: str, gw: ipaddress.IPv4Address | None,
            internal: bool, labels: dict | None) -> Network:
    from .bridge import gateway_of

    n = ipaddress.ip_network(subnet)
    if gw is not None and (gw not in n or gw in (n.network_address, n.broadcast_address)):
        raise InvalidOption(f"no matching subnet for gateway {gw}")
    new = Network(os.urandom(32).hex(), name, driver, subnet, str(gw) if gw else gateway_of(subnet), time.time_ns(),
                  internal, labels or {})
    try:
        _db(db).execute("INSERT INTO networks(id, name, driver, subnet, gateway, created, internal, labels, options) "
                        "VALUES(?,?,?,?,?,?,?,?,?)", (new.id, new.name, new.driver, new.subnet, new.gateway,
                                                       new.created, int(internal), json.dumps(new.labels), "{}"))
    except sqlite3.IntegrityError:
        raise InvalidOption(f"network with name {name} already exists") from None
    return new


def _parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidOption(f"invalid subnet {text!r}: an IPv4 CIDR such as 172.30.0.0/16") from None
    if net.version != 4:
        raise InvalidOption(f"invalid subnet {text!r}: soko's networks are IPv4")
    if net.prefixlen > 30:
        raise InvalidOption(f"subnet {text} is too small: at most /30")
    return net


def _parse_address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidOption(f"invalid {what} address {text!r}") from None


def active(network: Network, leases: Mapping[str, Any] | None = None) -> list:
    """The leases on this network now (containers running on it), from `leases`
    (every container's, leases.snapshot()) when given."""
    from .leases import snapshot

    return [l for l in (snapshot() if leases is None else leases).values() if l.network_id == network.id]


def remove(db: "MetadataDB", ref: str, leases: Mapping[str, Any] | None = None) -> Network:
    """`leases`: as for `active` (a prune reads them once for every network)."""
    net = get(db, ref)
    if net.predefined:
        raise NetworkInUse(f"{net.name} is a pre-defined network and cannot be removed")
    if active(net, leases):
        raise NetworkInUse(f"error while removing network: network {net.name} id {net.id} has active endpoints")
    from .leases import host_lock
    from .subnets import Claims

    with host_lock(), Claims() as claims:
        db.execute("DELETE FROM networks WHERE id=?", (net.id,))
        held = claims.get(net.bridge)
        if held is not None and held.network_id == net.id:
            claims.release(net.bridge)
    return net
