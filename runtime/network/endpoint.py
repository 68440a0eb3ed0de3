"""A container on a bridge: up before each start of its process, down after each end.

`up` takes the host's network lock, leases an address and the host ports
(held by sockets of the calling process, the container's owner, until
`down`), makes the bridge if it is the network's first container, starts
`nft` on soko's NAT rules in the background and creates the container's
namespace (netns.py), still empty. The caller then makes the container's
process in that namespace (its mounts; the built-in executor's child waits
before it runs anything) and meanwhile `Joining.done()` adds the veth pair
(eth0 inside, up with its address and default route; the host end on the
bridge), turns ip_forward on, starts the network's DNS responder (user
networks), waits for the rules and only then lets go of the lock: nft,
pyroute2's import, the plumbing and the container's setup overlap instead
of adding up. `down` undoes all of it in reverse, idempotently: the bridge,
the rules, the responder and ip_forward's old value go with the last
container. Either way, a failure half-way leaves nothing.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ContainerError
from . import bridge as bridgemod, firewall, netns, ports as portsmod
from .leases import Lease, Leases, locked, mac_of
from .nl import Netlink


@dataclass
class Plan:
    """What create decided about a container's network (kept in its launch plan)."""
    network_id: str
    network: str  # the network's name
    bridge: str
    subnet: str
    gateway: str
    dns: bool = False  # a user-defined network: names resolve through its responder
    names: list[str] = field(default_factory=list)  # name, aliases, short ID (the DNS answers for them)
    publish: list[str] = field(default_factory=list)  # -p texts
    exposed: list[str] = field(default_factory=list)  # -P: the exposed ports, "80/tcp"
    store: str = ""

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# The sockets holding each container's published ports (ports.hold), in the process that owns
# the container (its monitor, or a foreground soko) from `up` to `down`: they close with it.
_reserved: dict[str, list] = {}


def veth_name() -> str:
    """A fresh name for each start: the kernel may still be deleting the last start's pair."""
    return "veth" + os.urandom(6).hex()[:11]


class Joining:
    """A container joining its network (`up`): its lease taken and its namespace made (empty)
    under the host's network lock, the NAT rules on their way in; its process can be made in
    that namespace meanwhile. `done()`, before the process runs, plumbs the namespace (veth
    pair, address, route), waits for the rules and lets go of the lock."""

    def __init__(self, lease: Lease, table: Leases, rules: "Rules | None", plan: Plan, nl: Netlink | None,
                 unlock: Callable[[], None]):
        self.lease, self.plan = lease, plan
        self._table, self._rules, self._nl, self._unlock = table, rules, nl, unlock

    def done(self) -> None:
        """Idempotent. On a failure the container leaves its network again (nothing left, as a
        failure in `up`) and the error says why."""
        if self._unlock is None:
            return
        try:
            try:
                self._finish()
            except BaseException:
                _abandon(self._table, self.lease.container, self.plan.bridge, self._rules, self._nl)
                raise
        finally:
            if self._nl is not None:
                self._nl.close()
            unlock, self._unlock = self._unlock, None
            unlock()

    def _finish(self) -> None:
        lease, plan = self.lease, self.plan
        if self._nl is None:
            self._nl = Netlink()
        index, subnet, gateway = bridgemod.ensure(self._nl, plan.bridge, plan.subnet, plan.gateway)
        if (subnet, gateway) != (lease.subnet, lease.gateway):
            raise ContainerError(f"bridge {plan.bridge} changed its address meanwhile")
        _plumb(self._nl, lease.container, index, lease)
        bridgemod.forwarding_on(self._table.dir)
        if lease.dns:
            from . import dns

            dns.ensure(self._table.dir, lease.bridge, lease.gateway)
        rules, self._rules = self._rules, None
        if rules is not None:
            rules.wait()


def up(cid: str, plan: Plan) -> Joining:
    """Connect container `cid` (not running) to its network; `done()` it once its process is
    made, before the process runs (see Joining). On a bridge that exists (soko0 stays), the lease
    and the rules (which name addresses and ports, not links) go first, before pyroute2 is even
    loaded: nft, pyroute2's import, the plumbing and the container's own setup overlap."""
    stack = ExitStack()
    table = stack.enter_context(locked())
    rules = nl = None
    try:
        _sweep(table)
        old = table.get(cid)
        if old is not None or netns.exists(cid):
            _teardown(table, cid, old.bridge if old else None)
        reqs = portsmod.requests(plan.publish, plan.exposed)
        try:
            known = bridgemod.address_of(plan.bridge)
            if known is None:  # a new bridge: made first
                nl = Netlink()
                known = bridgemod.ensure(nl, plan.bridge, plan.subnet, plan.gateway)[1:]
            lease = _take_lease(table, cid, plan, reqs, *known)
            rules = _begin_rules(table)
            netns.create(cid)
        except BaseException:
            _abandon(table, cid, plan.bridge, rules, nl)
            if nl is not None:
                nl.close()
            raise
    except BaseException:
        stack.close()
        raise
    return Joining(lease, table, rules, plan, nl, stack.close)


def _abandon(table: Leases, cid: str, bridge: str, rules: "Rules | None", nl: Netlink | None) -> None:
    """A start that failed half-way: its rules' nft done first (the teardown applies them again)."""
    if rules is not None:
        try:
            rules.applying.wait()
        except ContainerError:
            pass
    _teardown(table, cid, bridge, nl)


def _take_lease(table: Leases, cid: str, plan: Plan, reqs: list, subnet: str, gateway: str) -> Lease:
    """An address and the host ports for `cid` on the network's bridge, in the table."""
    held = [p for l in table.all() for p in l.ports]
    published, _reserved[cid] = portsmod.resolve(reqs, held)
    address = table.next_address(plan.bridge, subnet, gateway)
    if address is None:
        raise ContainerError(f"no available IPv4 addresses on network {plan.network}: {subnet}")
    lease = Lease(cid, plan.network_id, plan.network, plan.bridge, subnet, gateway, address, mac_of(address),
                  veth_name(), os.urandom(32).hex(), list(plan.names), published, plan.dns, plan.store)
    table.add(lease)
    return lease


def _plumb(nl: Netlink, cid: str, bridge_index: int, lease: Lease) -> None:
    with netns.entered(cid) as nsfd:
        with Netlink() as inner:  # opened inside: it configures the container's namespace
            nl.add_veth(lease.veth, bridge_index, "eth0", nsfd, lease.mac)
            inner.set_up(1)  # lo
            eth0 = inner.link_index("eth0")
            inner.add_address(eth0, lease.address, lease.prefix)
            inner.set_up(eth0)
            inner.add_default_route(lease.gateway)


def down(cid: str) -> None:
    """Disconnect container `cid` (its process has ended); idempotent."""
    from .leases import reader

    for s in _reserved.pop(cid, []):
        s.close()

    table = reader()
    if table is None:
        if netns.exists(cid):
            netns.remove(cid)
        return
    try:
        if table.get(cid) is None and not netns.exists(cid):
            return
    finally:
        table.close()
    with locked() as table:
        lease = table.get(cid)
        _teardown(table, cid, lease.bridge if lease else None)
        _sweep(table)


def _sweep(table: Leases) -> None:
    """Stale leases: of containers whose namespace is gone (their owner was killed half-way), or
    whose container is gone from its store (a store thrown away while its containers ran). A
    container whose monitor was killed keeps its lease until its own store looks at it."""
    from ..containers import containers_dir

    for lease in table.all():
        gone = lease.store and not (containers_dir(lease.store) / lease.container).exists()
        if gone or not netns.exists(lease.container):
            _teardown(table, lease.container, lease.bridge)


def _teardown(table: Leases, cid: str, bridge: str | None, nl: Netlink | None = None) -> None:
    """Remove what container `cid` has on the host. Its namespace goes, and the kernel deletes
    the veth pair with it (in the background: deleting a link waits for RCU grace periods, tens of
    milliseconds a start-to-exit should not pay). With the last container on a user-defined
    network, that network's bridge and responder go too; `soko0` stays, as docker0 does."""
    for s in _reserved.pop(cid, []):
        s.close()
    netns.remove(cid)
    table.drop(cid)
    if bridge and bridge != bridgemod.DEFAULT_BRIDGE and not table.on_bridge(bridge):
        from . import dns

        dns.stop(table.dir, bridge)
        own = nl is None
        nl = nl or Netlink()
        try:
            nl.delete_link(bridge)
        finally:
            if own:
                nl.close()
        table.forget_pool(bridge)
    _apply_rules(table)
    if not table.all():
        bridgemod.forwarding_restore(table.dir)


class Rules:
    """soko's NAT rules on their way in (firewall.Applying), remembered once they are in."""

    def __init__(self, applying: firewall.Applying, stamp: str, text: str):
        self.applying, self.stamp, self.text = applying, stamp, text

    def wait(self) -> None:
        self.applying.wait()
        if self.text:
            with open(self.stamp, "w") as f:
                f.write(self.text)
        else:
            os.unlink(self.stamp)


def _begin_rules(table: Leases) -> Rules | None:
    """Start applying soko's NAT rules for the leases; None when they would not change."""
    leases = table.all()
    text = firewall.render_nft(leases) if leases else ""
    stamp = os.path.join(table.dir, "rules")
    try:
        with open(stamp) as f:
            if f.read() == text:
                return None
    except FileNotFoundError:
        if not text:
            return None
    return Rules(firewall.begin(leases), stamp, text)


def _apply_rules(table: Leases) -> None:
    """soko's NAT rules for the leases; not run again when they would not change."""
    rules = _begin_rules(table)
    if rules is not None:
        rules.wait()
