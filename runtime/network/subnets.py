"""The host's subnet claims: which subnet each of soko's bridge networks holds, whichever store
defined it.

A bridge network's subnet is routed in the host's network namespace, so two
networks whose subnets overlap cannot run at once, even when two stores (two
users of soko, two CI jobs with their own --root) define them. So every
network's subnet is claimed here when it is created (`soko0`'s, shared by
every store, when it is first needed) and released when it is removed; a new
network's subnet is chosen, and a --subnet checked, against every claim, as
Docker's IPAM checks against all its daemon's networks.

Leases (leases.py) go with the bridges at a reboot; claims last as long as
the networks' definitions in the stores, so they are kept in
/var/lib/soko/net/<namespace inode>/ (the host's own namespace has a fixed
inode). A claim whose store or network is gone (a store thrown away without
`network rm`) is stale, and dropped when it is read. Changes run under the
host's network lock (leases.host_lock).
"""
from __future__ import annotations

import ipaddress
import os
import sqlite3
from dataclasses import dataclass

from .leases import netns_key

STATE_DIR = "/var/lib/soko/net"
HOST = ""  # the store of soko0's claim: every store's
SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    bridge TEXT PRIMARY KEY,
    subnet TEXT NOT NULL,
    store TEXT NOT NULL,
    network_id TEXT NOT NULL,
    name TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Claim:
    bridge: str
    subnet: str
    store: str  # the store's root; HOST for soko0
    network_id: str
    name: str

    def overlaps(self, subnet: str) -> bool:
        return ipaddress.ip_network(self.subnet).overlaps(ipaddress.ip_network(subnet))

    def describe(self) -> str:
        return (f"soko's default bridge {self.bridge}: {self.subnet}" if self.store == HOST else
                f"network {self.name} of store {self.store}: {self.subnet}")


def state_dir() -> str:
    return os.path.join(STATE_DIR, netns_key())


def _alive(c: Claim) -> bool:
    """Whether the claim's network still exists in its store."""
    if c.store == HOST:
        return True
    db = os.path.join(c.store, "metadata.db")
    if not os.path.exists(db):
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT 1 FROM networks WHERE id=?", (c.network_id,)).fetchone() is not None
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        return "no such table" not in str(e)  # a store without networks holds none; busy: keep it


class Claims:
    """The claims table of this network namespace (opened under the host's network lock)."""

    def __init__(self, directory: str | None = None):
        self.dir = directory or state_dir()
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.conn = sqlite3.connect(os.path.join(self.dir, "subnets.db"), timeout=30, isolation_level=None)
        self.conn.executescript(SCHEMA)

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def live(self) -> list[Claim]:
        """Every claim whose network still exists; the stale ones are dropped."""
        out = []
        for row in self.conn.execute("SELECT bridge, subnet, store, network_id, name FROM claims ORDER BY subnet"):
            c = Claim(*row)
            if _alive(c):
                out.append(c)
            else:
                self.release(c.bridge)
        return out

    def get(self, bridge: str) -> Claim | None:
        row = self.conn.execute("SELECT bridge, subnet, store, network_id, name FROM claims WHERE bridge=?",
                                (bridge,)).fetchone()
        return Claim(*row) if row else None

    def claim(self, c: Claim) -> None:
        self.conn.execute("INSERT OR REPLACE INTO claims VALUES(?,?,?,?,?)",
                          (c.bridge, c.subnet, c.store, c.network_id, c.name))

    def release(self, bridge: str) -> None:
        self.conn.execute("DELETE FROM claims WHERE bridge=?", (bridge,))
