"""The IPAM table: which container holds which address, MAC and host ports, on which bridge.

Bridges, addresses, NAT rules and host ports belong to a network namespace
of the host, not to a store: two stores (two users of soko, two test runs)
share `soko0` and its subnet, so their leases must be one table. It is a
SQLite database in `/run/soko/net/<namespace inode>/` (tmpfs: it goes with
the bridges at reboot), next to the lock that serializes every change of
the host's network state, the saved ip_forward value and the DNS
responders' pid files. The store keeps the networks' definitions
(networks.py).

A lease is taken before anything is made in the kernel and dropped after
everything is gone, so what the kernel has is always covered by a lease. A
lease is stale when its container's namespace is gone (its owner killed
mid-way) or its container is gone from its store (a store thrown away while
the container ran); the next change by any store sweeps it (endpoint._sweep).
A container whose monitor or soko was killed with -9 keeps its lease until
its own store next looks at it (`ps`, `inspect`, `rm`, `run`, `create`), which
releases everything it held.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

NET_DIR = "/run/soko/net"
SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    container TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    network TEXT NOT NULL,
    bridge TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    address TEXT NOT NULL,
    mac TEXT NOT NULL,
    veth TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    names TEXT NOT NULL,
    ports TEXT NOT NULL,
    dns INTEGER NOT NULL,
    store TEXT NOT NULL,
    UNIQUE (bridge, address)
);
CREATE TABLE IF NOT EXISTS pools (bridge TEXT PRIMARY KEY, last TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Port:
    """A published port: host address ("" for all) and port, to the container's port."""
    host_ip: str
    host_port: int
    container_port: int
    proto: str = "tcp"

    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


@dataclass
class Lease:
    container: str
    network_id: str
    network: str
    bridge: str
    subnet: str
    gateway: str
    address: str
    mac: str
    veth: str
    endpoint: str
    names: list[str] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    dns: bool = False
    store: str = ""

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Lease":
        d = dict(row)
        d["names"] = json.loads(d["names"])
        d["ports"] = [Port(*p) for p in json.loads(d["ports"])]
        d["dns"] = bool(d["dns"])
        return cls(**d)

    def row(self) -> tuple:
        return (self.container, self.network_id, self.network, self.bridge, self.subnet, self.gateway,
                self.address, self.mac, self.veth, self.endpoint, json.dumps(self.names),
                json.dumps([[p.host_ip, p.host_port, p.container_port, p.proto] for p in self.ports]),
                int(self.dns), self.store)


def netns_key() -> str:
    """This thread's network namespace, by its nsfs inode (the host's own is fixed: 4026531833)."""
    return str(os.stat("/proc/thread-self/ns/net").st_ino)


def host_dir() -> str:
    """This network namespace's state directory."""
    return os.path.join(NET_DIR, netns_key())


class Leases:
    """The table, opened under the host's network lock (`locked`) or for reading."""

    def __init__(self, directory: str | None = None):
        self.dir = directory or host_dir()
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.conn = sqlite3.connect(os.path.join(self.dir, "leases.db"), timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def all(self) -> list[Lease]:
        return [Lease.from_row(r) for r in self.conn.execute("SELECT * FROM leases ORDER BY container")]

    def get(self, cid: str) -> Lease | None:
        row = self.conn.execute("SELECT * FROM leases WHERE container=?", (cid,)).fetchone()
        return Lease.from_row(row) if row else None

    def on_bridge(self, bridge: str) -> list[Lease]:
        return [Lease.from_row(r) for r in self.conn.execute("SELECT * FROM leases WHERE bridge=?", (bridge,))]

    def add(self, lease: Lease) -> None:
        with self.conn:
            self.conn.execute(f"INSERT INTO leases VALUES({','.join('?' * 14)})", lease.row())
            self.conn.execute("INSERT INTO pools(bridge, last) VALUES(?, ?) ON CONFLICT(bridge) "
                              "DO UPDATE SET last=excluded.last", (lease.bridge, lease.address))

    def drop(self, cid: str) -> None:
        self.conn.execute("DELETE FROM leases WHERE container=?", (cid,))

    def forget_pool(self, bridge: str) -> None:
        self.conn.execute("DELETE FROM pools WHERE bridge=?", (bridge,))

    def next_address(self, bridge: str, subnet: str, gateway: str) -> str | None:
        """The first free address after the last one handed out (Docker does not reuse a freed
        address at once either: other containers' neighbour caches may still name it)."""
        net = ipaddress.ip_network(subnet)
        used = {r[0] for r in self.conn.execute("SELECT address FROM leases WHERE bridge=?", (bridge,))}
        used.add(gateway)
        row = self.conn.execute("SELECT last FROM pools WHERE bridge=?", (bridge,)).fetchone()
        first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
        start = int(ipaddress.ip_address(row[0])) + 1 if row and ipaddress.ip_address(row[0]) in net else first
        span = last - first + 1
        for i in range(span):
            candidate = first + (start - first + i) % span
            text = str(ipaddress.ip_address(candidate))
            if text not in used:
                return text
        return None


@contextmanager
def host_lock() -> Iterator[str]:
    """The host's network lock: every change to bridges, leases, rules and subnet claims
    (subnets.py) runs under it, whichever store makes it. Yields the state directory."""
    directory = host_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)


@contextmanager
def locked() -> Iterator[Leases]:
    """The host's network lock and the table."""
    with host_lock() as directory:
        table = Leases(directory)
        try:
            yield table
        finally:
            table.close()


def reader() -> Leases | None:
    """The table for reading (ps, inspect, the DNS responder); None when nothing ever ran here."""
    directory = host_dir()
    if not os.path.exists(os.path.join(directory, "leases.db")):
        return None
    return Leases(directory)


def snapshot() -> dict[str, Lease]:
    """Every lease by container, read once (ps, network prune: not once per container or network)."""
    table = reader()
    if table is None:
        return {}
    try:
        return {lease.container: lease for lease in table.all()}
    finally:
        table.close()


def mac_of(address: str) -> str:
    """Docker's rule: 02:42 and the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(address).packed)
