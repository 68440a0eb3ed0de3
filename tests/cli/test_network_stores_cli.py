"""The host's network is one, whatever the stores: two stores (two --root, as two CI jobs on one
machine) share soko0's addresses and host ports and never get overlapping subnets; a container
whose soko or monitor is killed with -9 leaves nothing of its network once soko looks again."""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, SokoCLI

from .containers_helpers import (assert_nothing_left, bb, processes_mentioning, user_networks,  # noqa: F401
                                 wait_until)
from .network_helpers import (PAGE, assert_network_clean, free_port, httpd_args, inspect_json,  # noqa: F401
                              refused, veth_of, wait_http, www)


@pytest.fixture
def other(tmp_path, busybox_rootfs):
    """A second store on the same host, with the busybox image; emptied afterwards."""
    root = tmp_path / "other-store"
    root.mkdir()
    s = SokoCLI(root)
    s("import", "--change", 'CMD ["/bin/sh"]', busybox_rootfs, "bb:c")
    yield s
    if root.exists():
        left = s("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if left:
            s("rm", "-f", *left, check=False)
        if user_networks(root):
            s("network", "prune", "-f", check=False)


def ip_of(soko, container: str, network: str = "bridge") -> str:
    return inspect_json(soko, "--type", "container", container)[0]["NetworkSettings"]["Networks"][network][
        "IPAddress"]


def test_two_stores_share_the_default_bridge(soko, other, bb, www):
    """Containers of two stores run on soko0 at once: distinct addresses from the host's leases,
    each reachable from the host and from the other, and a host port held by one store's
    container is refused to the other's."""
    a = soko("run", "-d", "-p", "127.0.0.1::80", *httpd_args(www)).stdout.strip()
    b = other("run", "-d", "-p", "127.0.0.1::80", *httpd_args(www)).stdout.strip()
    ia, ib = ip_of(soko, a), ip_of(other, b)
    assert ia != ib
    subnet = inspect_json(soko, "network", "inspect", "bridge")[0]["IPAM"]["Config"]
    assert subnet == inspect_json(other, "network", "inspect", "bridge")[0]["IPAM"]["Config"]
    assert ipaddress.ip_address(ib) in ipaddress.ip_network(subnet[0]["Subnet"])
    pa = int(soko("port", a, "80").stdout.rsplit(":", 1)[1])
    pb = int(other("port", b, "80").stdout.rsplit(":", 1)[1])
    assert wait_http("127.0.0.1", pa) == PAGE and wait_http("127.0.0.1", pb) == PAGE
    get = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {} 80"
    assert soko("exec", a, "sh", "-c", get.format(ib)).stdout.endswith(PAGE)
    assert other("exec", b, "sh", "-c", get.format(ia)).stdout.endswith(PAGE)
    r = other("run", "--rm", "-p", f"127.0.0.1:{pa}:80", "bb:c", "true", check=False)
    assert r.returncode == 125 and "port is already allocated" in r.stderr
    veths = [veth_of(soko, a), veth_of(other, b)]
    soko("rm", "-f", a)
    assert wait_http("127.0.0.1", pb) == PAGE  # the other store's container is untouched
    other("rm", "-f", b)
    assert_network_clean([a, b], veths, addresses=[ia, ib])


def test_two_stores_get_subnets_that_do_not_overlap(soko, other, bb, tmp_path):
    """Each store names its own networks, but their subnets are claimed on the host: a network
    made without --subnet takes one no other store holds, a --subnet another store holds is
    refused, and a network removed (or a store thrown away) gives its subnet back."""
    soko("network", "create", "same")
    other("network", "create", "same")  # names are a store's own
    sa = inspect_json(soko, "network", "inspect", "same")[0]["IPAM"]["Config"][0]["Subnet"]
    sb = inspect_json(other, "network", "inspect", "same")[0]["IPAM"]["Config"][0]["Subnet"]
    assert not ipaddress.ip_network(sa).overlaps(ipaddress.ip_network(sb))
    r = other("network", "create", "--subnet", sa, "clash", check=False)
    assert r.returncode == 1 and r.stderr.startswith("soko: Pool overlaps with other one on this address space")
    assert f"network same of store {soko.root}: {sa}" in r.stderr
    assert "clash" not in other("network", "ls").stdout
    # both run at once, each on its own bridge
    a = soko("run", "-d", "--network", "same", "bb:c", "sleep", "60").stdout.strip()
    b = other("run", "-d", "--network", "same", "bb:c", "sleep", "60").stdout.strip()
    assert ipaddress.ip_address(ip_of(soko, a, "same")) in ipaddress.ip_network(sa)
    assert ipaddress.ip_address(ip_of(other, b, "same")) in ipaddress.ip_network(sb)
    soko("rm", "-f", a)
    soko("network", "rm", "same")
    other("network", "create", "--subnet", sa, "taken-back")  # released with the network
    other("rm", "-f", b)
    shutil.rmtree(other.root)  # thrown away without `network rm`: its claims are stale
    soko("network", "create", "--subnet", sb, "after")
    soko("network", "create", "--subnet", sa, "again")
    soko("network", "rm", "after", "again")


def test_killed_monitor_leaves_no_network(soko, bb, www):
    """kill -9 of a detached container's monitor: the container dies with it, and the next soko
    that looks (`ps -a`) releases its address, port, rules and namespace; `rm` the rest."""
    port = free_port()
    cid = soko("run", "-d", "-p", f"127.0.0.1:{port}:80", *httpd_args(www)).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    ip, veth = ip_of(soko, cid), veth_of(soko, cid)
    found = {int(line.split()[0]) for line in processes_mentioning(cid) if "runtime.monitor" in line}
    assert len(found) == 1
    os.kill(found.pop(), signal.SIGKILL)
    wait_until(lambda: "Exited (137)" in soko("ps", "-a").stdout, what="ps -a to show the container exited")
    assert refused("127.0.0.1", port)
    assert_network_clean([cid], [veth], addresses=[ip])
    again = soko("run", "-d", "-p", f"127.0.0.1:{port}:80", *httpd_args(www)).stdout.strip()  # the port is free
    assert wait_http("127.0.0.1", port) == PAGE
    soko("rm", "-f", cid, again)
    assert_nothing_left(soko, [cid, again])


def test_killed_soko_leaves_no_network(soko, bb, www):
    """kill -9 of a foreground `soko run --rm -p`: its container dies, and the next soko command
    removes it with everything of its network."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "soko", "--root", str(soko.root), "run", "--rm",
                          "-p", f"127.0.0.1:{port}:80", *httpd_args(www)], env={**os.environ, "PYTHONPATH": str(REPO)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_http("127.0.0.1", port) == PAGE
        cid = soko("ps", "-q", "--no-trunc").stdout.strip()
        ip = ip_of(soko, cid)
        shown = subprocess.run(["nsenter", f"--net=/run/soko/netns/{cid}", "ip", "-o", "link", "show", "eth0"],
                               capture_output=True, text=True, check=True).stdout
        veth = int(shown.split("@if", 1)[1].split(":", 1)[0])  # "2: eth0@if507: ...": the host end's index
    finally:
        p.kill()
        p.wait()
    wait_until(lambda: soko("ps", "-aq").stdout == "", what="the --rm container to be swept")
    assert refused("127.0.0.1", port)
    assert_network_clean([cid], [veth], addresses=[ip])
    assert_nothing_left(soko, [cid])


def test_a_store_thrown_away_leaves_no_lease(soko, other, bb, www):
    """A store removed while its container ran (its monitor killed, then `rm -rf` of the store):
    the next container started by any store sweeps the lease, so its port is free again."""
    port = free_port()
    cid = other("run", "-d", "-p", f"127.0.0.1:{port}:80", *httpd_args(www)).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    ip = ip_of(other, cid)
    found = {int(line.split()[0]) for line in processes_mentioning(cid) if "runtime.monitor" in line}
    os.kill(found.pop(), signal.SIGKILL)
    wait_until(lambda: not processes_mentioning(f"containers/{cid}"), what="the container to die")
    shutil.rmtree(other.root)
    soko("run", "--rm", "bb:c", "true")  # (or any other run's start on this host, meanwhile)
    assert_network_clean([cid], addresses=[ip])
    again = soko("run", "-d", "-p", f"127.0.0.1:{port}:80", *httpd_args(www)).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    soko("rm", "-f", again)
