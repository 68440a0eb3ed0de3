"""The host's network is one, whatever the stores: two stores (two --root, as two CI jobs on one
machine) share soko0's addresses and host ports and never get overlapping subnets."""
from __future__ import annotations

import ipaddress
import shutil

import pytest

from tests.conftest import SokoCLI

from .containers_helpers import bb, user_networks  # noqa: F401 - bb is a fixture
from .network_helpers import (PAGE, assert_network_clean, httpd_args, inspect_json, veth_of, wait_http,  # noqa: F401
                              www)


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

