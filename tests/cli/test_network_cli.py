"""Bridge networks as a user meets them: a web server published on a port, containers that find
each other by name, outbound NAT, and nothing left on the host afterwards."""
from __future__ import annotations

import socket
import subprocess

import pytest

from .containers_helpers import assert_nothing_left, bb, wait_until  # noqa: F401 - bb is a fixture
from .network_helpers import (PAGE, NsSoko, assert_network_clean, free_port, free_subnet24, free_subnet30,
                              host_address, httpd_args, in_netns, inspect_json, links, private_netns, refused,
                              veth_of, wait_http, www)  # noqa: F401 - www is a fixture

RUNTIMES = ["builtin", "runc"]


@pytest.mark.parametrize("rt", RUNTIMES)
def test_web_server_on_a_published_port(soko, bb, www, rt):
    port = free_port()
    cid = soko("run", "-d", "--runtime", rt, "--name", "web", "-p", f"127.0.0.1:{port}:80", *httpd_args(www)
               ).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    addr = host_address()
    if addr:  # published on 127.0.0.1 only: not on the host's other addresses
        assert refused(addr, port)
    d = inspect_json(soko, "--type", "container", "web")[0]["NetworkSettings"]
    ip = d["IPAddress"]
    assert d["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert d["Networks"]["bridge"]["IPAddress"] == ip and d["Gateway"] == d["Networks"]["bridge"]["Gateway"]
    assert d["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
    assert f"127.0.0.1:{port}->80/tcp" in soko("ps").stdout
    assert soko("port", "web").stdout == f"80/tcp -> 127.0.0.1:{port}\n"
    gateway = d["Gateway"]  # the request came from the host's loopback, masqueraded to the bridge's address
    assert f"[::ffff:{gateway}]:" in wait_until(lambda: soko("logs", "web").stderr, what="httpd's log")
    shown = soko("exec", "web", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {ip}/{d['IPPrefixLen']}" in shown
    assert soko("exec", "web", "cat", "/etc/hosts").stdout.endswith(f"{ip}\t{cid[:12]}\n")
    soko("stop", "-t", "1", "web")
    assert refused("127.0.0.1", port)
    assert soko("ps", "-a", "--format", "{{.Ports}}").stdout == "\n"
    assert inspect_json(soko, "--type", "container", "web")[0]["NetworkSettings"]["IPAddress"] == ""
    soko("start", "web")  # the network comes back with the container
    assert wait_http("127.0.0.1", port) == PAGE
    veth = veth_of(soko, "web")
    ip = inspect_json(soko, "--type", "container", "web")[0]["NetworkSettings"]["IPAddress"]
    soko("rm", "-f", "web")
    assert refused("127.0.0.1", port)
    assert_network_clean([cid], [veth], addresses=[ip])
    assert_nothing_left(soko, [cid])


def test_published_on_every_address_and_between_containers(soko, bb, www):
    port = free_port()
    cid = soko("run", "-d", "-p", f"{port}:80", *httpd_args(www)).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    addr = host_address()
    if addr:
        assert wait_http(addr, port) == PAGE  # DNAT on the host's own address, from the host
    gateway = inspect_json(soko, "--type", "container", cid)[0]["NetworkSettings"]["Gateway"]
    # another container through the host's address on its bridge (prerouting DNAT, hairpin NAT)
    out = soko("run", "--rm", "bb:c", "sh", "-c",
               f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {gateway} {port}").stdout
    assert out.startswith("HTTP/1.") and out.endswith(PAGE)
    veth = veth_of(soko, cid)
    soko("rm", "-f", cid)
    assert_network_clean([cid], [veth])


def test_publish_all_and_port(soko, bb, www, busybox_rootfs):
    soko("import", "--change", 'CMD ["/bin/sh"]', "--change", "EXPOSE 80 8443/tcp", busybox_rootfs, "bbx")
    soko("run", "-d", "--name", "all", "-P", "-v", f"{www}:/www:ro", "bbx", "httpd", "-f", "-p", "80", "-h", "/www")
    lines = soko("port", "all").stdout.splitlines()
    assert [x.split(" -> ")[0] for x in lines] == ["80/tcp", "8443/tcp"]
    host_port = int(soko("port", "all", "80").stdout.strip().rsplit(":", 1)[1])
    assert soko("port", "all", "80/tcp").stdout == f"0.0.0.0:{host_port}\n"
    assert host_port >= 1024
    assert wait_http("127.0.0.1", host_port) == PAGE
    r = soko("port", "all", "81", check=False)
    assert r.returncode == 1 and r.stderr == "soko: No public port '81/tcp' published for all\n"
    ports = soko("ps", "--format", "{{.Ports}}").stdout.strip()
    assert ports.startswith(f"0.0.0.0:{host_port}->80/tcp, 0.0.0.0:") and ports.endswith("->8443/tcp")


def can_bind(ip: str, port: int, proto: str = "tcp") -> bool:
    """Whether another program could take the port now (as servers do: SO_REUSEADDR, listen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            if proto == "tcp":
                s.listen(1)
        except OSError:
            return False
    return True


def test_a_published_port_is_held_on_the_host(soko, bb, www):
    """As Docker's port reservation: while a container publishes a port, no other program on the
    host can take it (its connections would go to the container through the DNAT rule)."""
    port, udp = free_port(), free_port()
    cid = soko("run", "-d", "-p", f"127.0.0.1:{port}:80", "-p", f"{udp}:53/udp", "-p", "127.0.0.1::8080",
               *httpd_args(www)).stdout.strip()
    assert wait_http("127.0.0.1", port) == PAGE
    chosen = int(soko("port", cid, "8080").stdout.rsplit(":", 1)[1])
    assert not can_bind("127.0.0.1", port) and not can_bind("0.0.0.0", port)
    assert not can_bind("127.0.0.1", chosen)
    assert not can_bind("0.0.0.0", udp, "udp")
    assert wait_http("127.0.0.1", port) == PAGE  # the reservation takes no traffic from the container
    soko("stop", "-t", "0", cid)
    assert can_bind("127.0.0.1", port) and can_bind("127.0.0.1", chosen) and can_bind("0.0.0.0", udp, "udp")
    soko("start", cid)
    assert not can_bind("127.0.0.1", port)
    assert wait_http("127.0.0.1", port) == PAGE
    soko("rm", "-f", cid)
    assert can_bind("127.0.0.1", port)


def test_a_taken_port_is_an_error_and_leaves_nothing(soko, bb, www):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = soko("run", "-d", "--name", "late", "-p", f"127.0.0.1:{port}:80", *httpd_args(www), check=False)
        assert r.returncode == 125
        assert r.stderr == f"soko: Bind for 127.0.0.1:{port} failed: port is already allocated\n"
        assert soko("ps", "-aq").stdout == ""
    port = free_port()
    first = soko("run", "-d", "-p", f"{port}:80", *httpd_args(www)).stdout.strip()
    r = soko("run", "--rm", "-p", f"127.0.0.1:{port}:80", "bb:c", "true", check=False)  # held by a container
    assert r.returncode == 125 and "port is already allocated" in r.stderr
    assert soko("ps", "-aq", "--no-trunc").stdout.split() == [first]
    veth = veth_of(soko, first)
    soko("rm", "-f", first)
    assert_network_clean([first], [veth])
    assert_nothing_left(soko, [first])


@pytest.mark.parametrize("rt", RUNTIMES)
def test_containers_find_each_other_by_name(soko, bb, www, rt):
    net = soko("network", "create", "appnet").stdout.strip()
    assert len(net) == 64
    bridge = f"br-{net[:12]}"
    web = soko("run", "-d", "--runtime", rt, "--network", "appnet", "--name", "web", "--network-alias", "www",
               *httpd_args(www)).stdout.strip()
    ip = inspect_json(soko, "--type", "container", "web")[0]["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
    out = soko("run", "--rm", "--runtime", rt, "--network", "appnet", "bb:c", "sh", "-c",
               "nslookup web; nslookup www; printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc web 80").stdout
    assert out.count(f"Address: {ip}") == 2 and out.endswith(PAGE)
    # an unknown name is forwarded, not answered by the network: no address for it
    assert "Address: " not in soko("run", "--rm", "--network", "appnet", "bb:c", "sh", "-c",
                                   "nslookup nosuchname.invalid | grep -v '^Address:.*:53$'", check=False).stdout
    doc = inspect_json(soko, "network", "inspect", "appnet")[0]
    assert doc["Containers"][web]["Name"] == "web" and doc["Containers"][web]["IPv4Address"].startswith(ip + "/")
    settings = inspect_json(soko, "--type", "container", "web")[0]["NetworkSettings"]
    assert settings["IPAddress"] == "" and settings["Networks"]["appnet"]["Aliases"] == ["www", web[:12]]
    r = soko("network", "rm", "appnet", check=False)
    assert r.returncode == 1 and "has active endpoints" in r.stderr
    assert bridge in links()
    veth = veth_of(soko, "web")
    soko("rm", "-f", "web")
    assert_network_clean([web], [veth], [bridge], addresses=[ip])
    assert soko("network", "rm", "appnet").stdout == "appnet\n"
    assert "appnet" not in soko("network", "ls").stdout
    assert_nothing_left(soko, [web], [bridge])


def test_network_commands(soko, bb):
    ls = soko("network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert sorted(line.split()[1:] for line in ls[1:]) == [["bridge", "bridge", "local"], ["host", "host", "local"],
                                                            ["none", "null", "local"]]
    subnet = free_subnet24()
    base = subnet.rsplit(".", 1)[0]
    soko("network", "create", "--subnet", subnet, "--gateway", f"{base}.254", "--label", "a=b", "n1")
    doc = inspect_json(soko, "network", "inspect", "n1")[0]
    assert doc["IPAM"]["Config"] == [{"Subnet": subnet, "Gateway": f"{base}.254"}]
    assert doc["Driver"] == "bridge" and doc["Labels"] == {"a": "b"} and doc["Containers"] == {}
    r = soko("network", "create", "--subnet", f"{base}.128/25", "n2", check=False)
    assert r.returncode == 1 and "overlaps" in r.stderr
    r = soko("network", "create", "n1", check=False)
    assert r.returncode == 1 and r.stderr == "soko: network with name n1 already exists\n"
    r = soko("network", "rm", "bridge", check=False)
    assert r.returncode == 1 and "pre-defined" in r.stderr
    assert soko("network", "ls", "-q", "--filter", "label=a=b").stdout.strip() == doc["Id"][:12]
    out = soko("run", "--rm", "--network", "n1", "bb:c", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {base}.1/24" in out
    r = soko("run", "--rm", "--network", "nosuch", "bb:c", "true", check=False)
    assert r.returncode == 1 and r.stderr == "soko: network nosuch not found\n"
    r = soko("run", "--rm", "--network-alias", "x", "bb:c", "true", check=False)
    assert r.returncode == 125 and "user defined networks" in r.stderr
    soko("create", "--network", "n1", "bb:c", "true")
    soko("network", "create", "n3")
    r = soko("network", "prune", "-f")
    assert r.stdout == "Deleted Networks:\nn3\n\n"
    assert [x.split()[1] for x in soko("network", "ls").stdout.splitlines()[1:]] == ["bridge", "host", "n1", "none"]


def test_none_and_host_keep_working(soko, bb):
    out = soko("run", "--rm", "--network", "none", "bb:c", "ip", "-o", "link").stdout
    assert "eth0" not in out and "lo" in out
    before = set(links())
    out = soko("run", "--rm", "--network", "host", "bb:c", "ip", "-o", "link").stdout
    seen = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    stable = before & set(links())  # other runs add and remove veths meanwhile
    assert len(stable) > 1 and stable <= seen
    r = soko("run", "--rm", "--network", "host", "-p", "80:80", "bb:c", "true")
    assert r.stderr == "WARNING: Published ports are discarded when using host network mode\n"


def test_outbound_nat(soko, bb, tmp_path):
    """A container reaches a server outside the host's bridges, its address masqueraded: the server
    sees the host's own address. The 'outside' is a namespace the test makes, behind a veth pair."""
    with private_netns() as outside:
        host_side, server = free_subnet30()
        name = outside.rsplit("/", 1)[1]
        veth = f"sokot{name[-8:]}"[:15]
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name],
                       check=True)
        try:
            subprocess.run(["ip", "addr", "add", f"{host_side}/30", "dev", veth], check=True)
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
            subprocess.run(["ip", "-n", name, "addr", "add", f"{server}/30", "dev", "eth0"], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
            script = ("import socket; s = socket.socket(); s.bind(('0.0.0.0', 7070)); s.listen(1); "
                      "print('ready', flush=True); c, a = s.accept(); c.sendall(a[0].encode() + b'\\n'); c.close()")
            srv = subprocess.Popen(["nsenter", f"--net={outside}", "python3", "-c", script], stdout=subprocess.PIPE,
                                   text=True)
            try:
                assert srv.stdout.readline() == "ready\n"
                out = soko("run", "--rm", "bb:c", "sh", "-c", f"nc {server} 7070 </dev/null").stdout
                assert out == f"{host_side}\n"  # not the container's 172.x address: masqueraded
            finally:
                srv.kill()
                srv.wait()
        finally:
            subprocess.run(["ip", "link", "del", veth], check=False)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_nothing_left_and_ip_forward_restored(store_root, bb, www, rt):
    """In a network namespace of the test's own (ip_forward 0 there): soko turns it on for its
    containers and puts it back with the last one, with its bridges, rules and responders."""
    with private_netns() as ns:
        soko = NsSoko(store_root, ns)
        fwd = lambda: in_netns(ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()  # noqa: E731
        assert fwd() == "0"
        port = free_port()
        a = soko("run", "-d", "--runtime", rt, "-p", f"127.0.0.1:{port}:80", *httpd_args(www)).stdout.strip()
        soko("network", "create", "side")
        b = soko("run", "-d", "--runtime", rt, "--network", "side", "--name", "b", "bb:c", "sleep", "60"
                 ).stdout.strip()
        assert fwd() == "1" and "table ip soko" in in_netns(ns, "nft", "list", "tables").stdout
        get = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/index.html', timeout=3).read().decode())"
        assert wait_until(lambda: in_netns(ns, "python3", "-c", get % port).stdout, what="HTTP") == PAGE + "\n"
        assert "Address: " in soko("exec", "b", "nslookup", "b").stdout
        bridge = "br-" + soko("network", "inspect", "--format", "{{.Id}}", "side").stdout[:12]
        dns = [p for p in subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout.splitlines()
               if "runtime.network.dns" in p and bridge in p]
        assert len(dns) == 1
        soko("rm", "-f", a, b)
        assert fwd() == "0"
        assert in_netns(ns, "nft", "list", "tables").stdout == ""
        left = [x.split(":")[1].strip() for x in in_netns(ns, "ip", "-o", "link").stdout.splitlines()]
        assert wait_until(lambda: [x.split(":")[1].strip().split("@")[0] for x in
                                   in_netns(ns, "ip", "-o", "link").stdout.splitlines()] == ["lo", "soko0"],
                          what=f"only lo and soko0 left (not {left})")
        assert_network_clean([a, b], [], [bridge], ns)
        assert_nothing_left(soko, [a, b], [bridge])


def test_iptables_where_nft_is_missing(store_root, bb, www):
    with private_netns() as ns:
        soko = NsSoko(store_root, ns)
        port = free_port()
        env = {"SOKO_FIREWALL": "iptables"}
        a = soko("run", "-d", "-p", f"127.0.0.1:{port}:80", *httpd_args(www), env=env).stdout.strip()
        rules = in_netns(ns, "iptables", "-t", "nat", "-S").stdout
        assert f"-A SOKO-PORTS -d 127.0.0.1/32 -p tcp -m tcp --dport {port} -j DNAT" in rules
        assert "-A POSTROUTING -j SOKO-POSTROUTING" in rules
        get = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/index.html', timeout=3).read().decode())"
        assert wait_until(lambda: in_netns(ns, "python3", "-c", get % port).stdout, what="HTTP") == PAGE + "\n"
        soko("rm", "-f", a, env=env)
        for table in ("nat", "filter"):
            assert "SOKO" not in in_netns(ns, "iptables", "-t", table, "-S").stdout


def test_ps_and_network_prune_read_the_leases_once(soko, bb, tmp_path):
    """`soko ps` opens the leases table once however many containers run (it opened it,
    a connection with its WAL pragma and schema, per running container), and `network
    prune` once however many networks it looks at (it read the leases twice per network)."""
    for i in range(3):
        soko("run", "-d", "--name", f"ps{i}", "bb:c", "sleep", "120")
    for i in range(3):
        soko("network", "create", f"unused{i}")

    def opens(*args: str) -> tuple[int, str]:
        log = tmp_path / "trace"
        p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), *soko.argv(), *args],
                           capture_output=True, text=True, env=soko.env, check=True)
        return sum(1 for line in log.read_text().splitlines() if '/leases.db"' in line), p.stdout
    n, out = opens("ps", "--format", "{{.Names}} {{.Ports}}")
    assert sorted(out.split()) == ["ps0", "ps1", "ps2"] and n == 1, (n, out)
    n, out = opens("network", "prune", "-f")
    assert sorted(out.split()[2:]) == ["unused0", "unused1", "unused2"] and n == 1, (n, out)
    assert soko("network", "ls", "--format", "{{.Name}}").stdout.split() == ["bridge", "host", "none"]
