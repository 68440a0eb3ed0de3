"""Helpers for the network tests: an httpd image, HTTP from the host, private network namespaces,
and a check that nothing of a container's network is left on the host."""
from __future__ import annotations

import glob
import http.client
import ipaddress
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SokoCLI

from .containers_helpers import wait_until

PAGE = "hello from a soko container\n"
OURS = ("soko", "br-", "veth", "podman", "docker", "cni", "virbr", "lo")


@pytest.fixture
def www(tmp_path) -> str:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text(PAGE)
    return str(d)


def httpd_args(www: str, port: int = 80) -> list[str]:
    """busybox httpd in the foreground serving `www`, logging each request (-v) to stderr."""
    return ["-v", f"{www}:/www:ro", "bb:c", "httpd", "-f", "-v", "-p", str(port), "-h", "/www"]


def http_get(host: str, port: int, timeout: float = 3) -> tuple[int, str]:
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", "/index.html")
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_http(host: str, port: int, timeout: float = 15) -> str:
    """The page once the server answers (a container's server takes a moment to listen)."""
    def attempt():
        try:
            status, body = http_get(host, port, 2)
            return body if status == 200 else None
        except OSError:
            return None
    return wait_until(attempt, timeout, 0.05, f"HTTP on {host}:{port}")


def refused(host: str, port: int) -> bool:
    try:
        http_get(host, port, 2)
    except OSError:
        return True
    return False


def host_address() -> str | None:
    """A non-loopback IPv4 address of this host that is not a container bridge's, or None."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        words = line.split()
        if not words[1].startswith(OURS):
            return words[3].split("/")[0]
    return None


def links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def nft_tables(prefix: list[str] = ()) -> str:
    return subprocess.run([*prefix, "nft", "list", "tables"], capture_output=True, text=True).stdout


def veth_of(soko, container: str) -> int:
    """The host-side interface index of a running container's veth pair (its eth0's peer)."""
    return int(soko("exec", container, "cat", "/sys/class/net/eth0/iflink").stdout)


def link_indexes(prefix: list[str] = ()) -> set[int]:
    out = subprocess.run([*prefix, "ip", "-o", "link"], capture_output=True, text=True).stdout
    return {int(line.split(":")[0]) for line in out.splitlines()}


def net_state_dirs(netns: str | None = None) -> list[str]:
    """soko's state directories of a network namespace (the host's by default): leases, claims."""
    ino = os.stat(netns or "/proc/self/ns/net").st_ino
    return [f"/run/soko/net/{ino}", f"/var/lib/soko/net/{ino}"]


def leases_of(ids, netns: str | None = None) -> list[str]:
    """Which of these containers hold a lease in the namespace's IPAM table."""
    db = os.path.join(net_state_dirs(netns)[0], "leases.db")
    if not os.path.exists(db):
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in conn.execute("SELECT container FROM leases") if r[0] in ids]
    finally:
        conn.close()


def assert_network_clean(ids, veths=(), bridges=(), netns: str | None = None, addresses=()) -> None:
    """None of these containers' leases, veth pairs (the kernel deletes a pair with its namespace,
    in the background: given a few seconds), namespace mounts or NAT rules (none of `addresses` in
    soko's table) left; no user bridge of `bridges` nor its DNS responder. Other runs may use soko0
    and the table meanwhile, so only what is ours is checked here (test_nothing_left... checks all
    of it in a namespace of its own)."""
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    assert leases_of(ids, netns) == []
    wait_gone(lambda: set(veths) & link_indexes(prefix))
    assert set(veths) & link_indexes(prefix) == set()
    names = subprocess.run([*prefix, "ip", "-o", "link"], capture_output=True, text=True).stdout
    ps = subprocess.run(["ps", "-ewwo", "args"], capture_output=True, text=True).stdout
    for b in bridges:
        assert f" {b}:" not in names and f" {b}@" not in names
        assert not [p for p in ps.splitlines() if "runtime.network.dns" in p and b in p]
    for cid in ids:
        assert not os.path.exists(f"/run/soko/netns/{cid}")
        mounts = []
        for mi in glob.glob("/proc/[0-9]*/mountinfo"):
            try:
                with open(mi) as f:
                    mounts += [mi for line in f if f"/run/soko/netns/{cid}" in line]
            except OSError:
                continue
        assert mounts == []
    rules = subprocess.run([*prefix, "nft", "list", "table", "ip", "soko"], capture_output=True, text=True).stdout
    for a in addresses:
        assert f" {a}:" not in rules and f" {a} " not in rules


class NsSoko(SokoCLI):
    """soko run inside a network namespace the test made: its bridges, rules and ip_forward are
    that namespace's, nothing of the host's changes."""

    def __init__(self, root: Path, netns: str):
        super().__init__(root)
        self.netns = netns

    def argv(self) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *super().argv()]


@contextmanager
def private_netns():
    """A fresh network namespace (lo up, ip_forward 0: a new namespace may copy the host's 1),
    removed afterwards; yields its path."""
    name = f"soko-test-{os.getpid()}-{random.randrange(1 << 30)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/run/netns/{name}"
    state = net_state_dirs(path)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        in_netns(path, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward", check=True)
        yield path
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        for d in state:  # soko's leases and claims of the namespace go with it
            shutil.rmtree(d, ignore_errors=True)


def in_netns(path: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True, **kw)


def free_subnet30() -> tuple[str, str]:
    """Two addresses of a /30 in 198.18.0.0/15 (benchmark space) no route of the host covers."""
    taken = routes()
    while True:
        base = ipaddress.ip_network(f"198.18.{random.randrange(256)}.{random.randrange(64) * 4}/30")
        if not any(base.overlaps(t) for t in taken):
            hosts = list(base.hosts())
            return str(hosts[0]), str(hosts[1])


def free_subnet24() -> str:
    """A /24 in 10.240.0.0/12 that no route of the host covers, chosen at random so that test runs
    on one machine at once do not pick the same (soko refuses a subnet another store holds)."""
    taken = routes()
    while True:
        net = ipaddress.ip_network(f"10.{random.randrange(240, 256)}.{random.randrange(256)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return str(net)


def routes() -> list:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    taken = []
    for line in out.splitlines():
        word = line.split()[0]
        if word == "local" or word == "broadcast":
            word = line.split()[1]
        if word[0].isdigit():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    return taken


def inspect_json(soko, *args) -> list:
    """`soko inspect ARGS` (or `soko network inspect ...` when ARGS start with "network")."""
    return json.loads(soko(*args).stdout if args[:1] == ("network",) else soko("inspect", *args).stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_gone(check, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while check() and time.monotonic() < deadline:
        time.sleep(0.05)
