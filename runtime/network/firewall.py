"""NAT for the bridges: outbound masquerade, published ports (DNAT), the localhost path.

All of soko's rules live in its own nftables table, `ip soko`, rendered
from the leases as a whole and swapped in atomically (`nft -f`: the table
is declared, deleted and declared again in one transaction), and deleted
with the last container. Other tools' tables and chains are never touched.
Where `nft` is missing, the same rules go into soko's own iptables chains
(SOKO-*), jumped to from the built-in ones ($SOKO_FIREWALL=nft|iptables
chooses explicitly).

For each bridge with containers: traffic from its subnet leaving by another
interface is masqueraded; traffic to a published port on a local address is
DNATed to the container, both arriving (prerouting) and from the host itself
(output); from the host's loopback that needs route_localnet on the bridge
(bridge.py) and a masquerade, so the container answers the bridge's gateway;
a container reaching another's published port through a host address
(hairpin) is masqueraded too.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import ContainerError
from .leases import Lease

TABLE = "soko"


class FirewallError(ContainerError):
    pass


def backend() -> str:
    choice = os.environ.get("SOKO_FIREWALL", "")
    if choice in ("nft", "iptables"):
        return choice
    if shutil.which("nft"):
        return "nft"
    if shutil.which("iptables"):
        return "iptables"
    raise FirewallError("bridge networking needs nft (nftables) or iptables")


def _bridges(leases: list[Lease]) -> list[tuple[str, str]]:
    return sorted({(l.bridge, l.subnet) for l in leases})


def render_nft(leases: list[Lease]) -> str:
    ports = []
    for l in leases:
        for p in l.ports:
            match = f"ip daddr {p.host_ip} " if p.host_ip else ""
            ports.append(f"    {match}{p.proto} dport {p.host_port} dnat to {l.address}:{p.container_port}")
    post = []
    for bridge, subnet in _bridges(leases):
        post += [f'    ip saddr {subnet} oifname != "{bridge}" masquerade',
                 f'    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade',
                 f'    oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade']
    return "\n".join([
        f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{",
        "  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump ports", "  }",
        "  chain output {", "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump ports", "  }",
        "  chain ports {", *ports, "  }",
        "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;", *post, "  }",
        "}", ""])


JUMPS = [("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "SOKO-PORTS"]),
         ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "SOKO-PORTS"]),
         ("nat", "POSTROUTING", ["-j", "SOKO-POSTROUTING"]),
         ("filter", "FORWARD", ["-j", "SOKO-FORWARD"])]


def render_iptables(leases: list[Lease]) -> str:
    nat = ["*nat", ":SOKO-PORTS - [0:0]", ":SOKO-POSTROUTING - [0:0]"]
    for l in leases:
        for p in l.ports:
            match = f"-d {p.host_ip}/32 " if p.host_ip else ""
            nat.append(f"-A SOKO-PORTS {match}-p {p.proto} --dport {p.host_port} "
                       f"-j DNAT --to-destination {l.address}:{p.container_port}")
    filt = ["*filter", ":SOKO-FORWARD - [0:0]"]
    for bridge, subnet in _bridges(leases):
        nat += [f"-A SOKO-POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE",
                f"-A SOKO-POSTROUTING -s 127.0.0.0/8 -o {bridge} -j MASQUERADE",
                f"-A SOKO-POSTROUTING -s {subnet} -o {bridge} -m conntrack --ctstate DNAT -j MASQUERADE"]
        filt += [f"-A SOKO-FORWARD -i {bridge} -j ACCEPT",
                 f"-A SOKO-FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"]
    return "\n".join(nat + ["COMMIT"] + filt + ["COMMIT", ""])


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> bool:
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if p.returncode != 0 and check:
        raise FirewallError(f"{' '.join(argv[:2])}: {p.stderr.strip() or 'failed'}")
    return p.returncode == 0


class Applying:
    """Rules on their way into the kernel: `nft -f` at work in the background (15-20 ms of its
    own), while the caller does something else; wait() raises FirewallError when it failed."""

    def __init__(self, proc: subprocess.Popen | None = None):
        self.proc = proc

    def wait(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        err = p.stderr.read()
        p.stderr.close()
        if p.wait() != 0:
            raise FirewallError(f"nft -f: {err.strip() or 'failed'}")


def begin(leases: list[Lease]) -> Applying:
    """Start making soko's rules those of `leases` (none left when there are none)."""
    if not leases:
        remove()
        return Applying()
    if backend() == "nft":
        p = subprocess.Popen(["nft", "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            p.stdin.write(render_nft(leases))  # nft reads it all before it writes anything
            p.stdin.close()
        except BrokenPipeError:
            pass  # nft ended early: why is on its stderr
        return Applying(p)
    _run(["iptables-restore", "--noflush"], render_iptables(leases))
    for table, chain, rule in JUMPS:
        if not _run(["iptables", "-w", "-t", table, "-C", chain, *rule], check=False):
            _run(["iptables", "-w", "-t", table, "-I", chain, "1", *rule])
    return Applying()


def apply(leases: list[Lease]) -> None:
    """Make soko's rules those of `leases` (none left when there are none)."""
    begin(leases).wait()


def remove() -> None:
    """Delete every rule of soko's (idempotent)."""
    if backend() == "nft":
        _run(["nft", "delete", "table", "ip", TABLE], check=False)
        return
    for table, chain, rule in JUMPS:
        while _run(["iptables", "-w", "-t", table, "-D", chain, *rule], check=False):
            pass
    for table, chain in (("nat", "SOKO-PORTS"), ("nat", "SOKO-POSTROUTING"), ("filter", "SOKO-FORWARD")):
        _run(["iptables", "-w", "-t", table, "-F", chain], check=False)
        _run(["iptables", "-w", "-t", table, "-X", chain], check=False)
