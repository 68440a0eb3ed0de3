"""The network's parts that need no bridge: the DNS responder over loopback, -p parsing, IPAM."""
from __future__ import annotations

import gc
import os
import resource
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest

from runtime.errors import InvalidOption
from runtime.network import dns, ports
from runtime.network.leases import Lease, Leases, Port, mac_of


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def answers(msg: bytes) -> tuple[int, int, list[str]]:
    """(id, flags, A addresses) of a response with one question."""
    qid, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", msg)
    off = 12
    while msg[off]:
        off += 1 + msg[off]
    off += 5
    out = []
    for _ in range(an):
        _name, rtype, _cls, _ttl, size = struct.unpack_from("!HHHIH", msg, off)
        off += 12
        if rtype == 1:
            out.append(socket.inet_ntoa(msg[off:off + size]))
        off += size
    return qid, flags, out


@pytest.fixture
def upstream():
    """A resolver on loopback answering every A query with 192.0.2.77."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                msg, peer = s.recvfrom(512)
            except OSError:
                continue
            end = dns.question(msg)[2]
            s.sendto(dns.reply(msg, end, ["192.0.2.77"]), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname()
    stop.set()
    t.join()
    s.close()


@contextmanager
def responder(tmp_path, servers: list, names=("web",), backlog: int = 4, rcvbuf: int | None = None):
    """A DNS responder of network br-test (one container, 10.9.0.7, called `names`) running
    in a thread, with a UDP client; yields (responder, client). It must leave by itself
    once the container's lease is gone (no container left on its network)."""
    table = Leases(str(tmp_path))
    table.add(Lease("c" * 64, "n" * 64, "appnet", "br-test", "10.9.0.0/24", "10.9.0.1", "10.9.0.7",
                    mac_of("10.9.0.7"), "vethx", "e" * 64, list(names)))
    (tmp_path / "lock").touch()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    if rcvbuf:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(backlog)
    r = dns.Responder(str(tmp_path), "br-test", udp, tcp, servers=servers)
    t = threading.Thread(target=r.run, daemon=True)
    t.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    try:
        yield r, client
    finally:
        table.drop("c" * 64)
        t.join(10)
        assert not t.is_alive()
        table.close()
        client.close()
        udp.close()
        tcp.close()


def test_dns_responder_answers_names_and_forwards_the_rest(tmp_path, upstream):
    with responder(tmp_path, [upstream], ["web", "WWW", "cccccccccccc"]) as (r, client):
        def ask(name, qtype=1, qid=7):
            client.sendto(query(name, qtype, qid), r.udp.getsockname())
            return answers(client.recv(512))

        qid, flags, addrs = ask("web")
        assert (qid, addrs) == (7, ["10.9.0.7"]) and flags & 0x0400 and flags & 0x8000  # authoritative answer
        assert ask("www.")[2] == ["10.9.0.7"]  # names are case-insensitive
        assert ask("cccccccccccc")[2] == ["10.9.0.7"]
        _id, flags, addrs = ask("web", qtype=28)  # AAAA: the name exists, no IPv6 address
        assert addrs == [] and flags & 0xF == 0
        assert ask("example.test", qid=99)[:3:2] == (99, ["192.0.2.77"])  # forwarded to the host's resolver
        with socket.create_connection(r.tcp.getsockname(), timeout=5) as c:
            q = query("web")
            c.sendall(struct.pack("!H", len(q)) + q)
            size = struct.unpack("!H", _exact(c, 2))[0]
            data = _exact(c, size)
        assert answers(data)[2] == ["10.9.0.7"]



def test_publish_requests():
    assert ports.requests(["8080:80", "127.0.0.1:9000:90/udp", "70", "127.0.0.1::71"]) == [
        ports.Request("", (8080,), 80, "tcp"), ports.Request("127.0.0.1", (9000,), 90, "udp"),
        ports.Request("", (0,), 70, "tcp"), ports.Request("127.0.0.1", (0,), 71, "tcp")]
    assert ports.requests(["8000-8001:80-81"]) == [ports.Request("", (8000,), 80, "tcp"),
                                                   ports.Request("", (8001,), 81, "tcp")]
    assert ports.requests(["9000-9002:80"]) == [ports.Request("", (9000, 9001, 9002), 80, "tcp")]
    # -P: the exposed ports that -p does not publish already
    assert ports.requests(["8080:80"], ["80/tcp", "443/tcp"]) == [ports.Request("", (8080,), 80, "tcp"),
                                                                  ports.Request("", (0,), 443, "tcp")]
    for bad in ["8000-8002:80-81", "x:80", "::1:80:80", "300000:80", "1.2.3:80:80"]:
        with pytest.raises(InvalidOption):
            ports.requests([bad])


def test_resolve_refuses_a_port_held_by_a_container_or_a_process():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        free = s.getsockname()[1]  # free for UDP now; held by a "container" below
    held = [Port("", free, 80, "tcp")]
    with pytest.raises(ports.PortTaken, match=f"0.0.0.0:{free} failed: port is already allocated"):
        ports.resolve(ports.requests([f"{free}:80"]), held)
    with pytest.raises(ports.PortTaken):
        ports.resolve(ports.requests([f"127.0.0.1:{free}:80"]), held)  # 0.0.0.0 covers every address
    got, socks = ports.resolve(ports.requests([f"{free}:80/udp"]), held)  # another protocol
    assert got[0].host_port == free and socks[0].getsockname()[1] == free
    with pytest.raises(ports.PortTaken):  # and held by its socket until that is closed
        ports.resolve(ports.requests([f"{free}:80/udp"]), [])
    socks[0].close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        with pytest.raises(ports.PortTaken):
            ports.resolve(ports.requests([f"127.0.0.1:{taken}:80"]), [])
        try:
            got, socks = ports.resolve(ports.requests([f"127.0.0.1:{taken}-{taken + 1}:80"]), [])  # the first free
        except ports.PortTaken:
            return  # another program has taken + 1 meanwhile
        for s2 in socks:
            s2.close()
        assert got == [Port("127.0.0.1", taken + 1, 80, "tcp")]


def test_addresses_roll_on_and_skip_the_gateway(tmp_path):
    table = Leases(str(tmp_path))
    try:
        assert table.next_address("b0", "10.9.0.0/29", "10.9.0.1") == "10.9.0.2"
        for i, addr in enumerate(["10.9.0.2", "10.9.0.3"]):
            table.add(Lease(str(i), "n", "net", "b0", "10.9.0.0/29", "10.9.0.1", addr, mac_of(addr), "v", "e"))
        table.drop("0")
        assert table.next_address("b0", "10.9.0.0/29", "10.9.0.1") == "10.9.0.4"  # not the one just freed
        for i, addr in enumerate(["10.9.0.4", "10.9.0.5", "10.9.0.6"], 10):
            table.add(Lease(str(i), "n", "net", "b0", "10.9.0.0/29", "10.9.0.1", addr, mac_of(addr), "v", "e"))
        assert table.next_address("b0", "10.9.0.0/29", "10.9.0.1") == "10.9.0.2"  # wraps to the free one
        table.add(Lease("x", "n", "net", "b0", "10.9.0.0/29", "10.9.0.1", "10.9.0.2", "m", "v", "e"))
        assert table.next_address("b0", "10.9.0.0/29", "10.9.0.1") is None
    finally:
        table.close()
    assert mac_of("172.17.0.2") == "02:42:ac:11:00:02"
    assert os.path.exists(tmp_path / "leases.db")


def test_dns_responder_outlives_a_flood_of_queries_it_must_forward(tmp_path):
    """A container asking for names the upstream never answers: each forwarded query waits for
    its answer on a socket of its own, and those are capped (beyond, SERVFAIL at once), so the
    responder neither runs out of descriptors nor stops answering its own names."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # an upstream that never answers
    silent.bind(("127.0.0.1", 0))
    with silent, responder(tmp_path, [silent.getsockname()], rcvbuf=4 << 20) as (r, client):
        for i in range(1500):
            client.sendto(query(f"n{i}.example.test", 1, i), r.udp.getsockname())
        client.sendto(query("web", 1, 9999), r.udp.getsockname())
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            qid, _flags, addrs = answers(client.recv(512))
            if qid == 9999:
                found = addrs
        assert found == ["10.9.0.7"]
        assert len(r.pending) <= dns.MAX_PENDING


def test_dns_tcp_clients_stall_neither_udp_answers_nor_each_other(tmp_path, upstream):
    """TCP clients are served in the responder's select loop: one sending a byte
    every 1.5 s (each within the old per-recv timeout) delays no UDP answer and
    no other TCP client, and is dropped TIMEOUT after its last whole query; idle
    ones beyond MAX_STREAMS push the oldest out. A TCP client may send two
    queries at once (glibc asks A and AAAA so), forwarded ones included."""
    stop = threading.Event()
    idle: list[socket.socket] = []
    with responder(tmp_path, [upstream], backlog=128) as (r, client):
        udp, tcp = r.udp, r.tcp
        slow = socket.create_connection(tcp.getsockname(), timeout=10)
        idle.append(slow)

        def dribble() -> None:
            q = query("web")
            for b in struct.pack("!H", len(q)) + q:
                try:
                    slow.send(bytes([b]))
                except OSError:
                    return
                if stop.wait(1.5):
                    return
        try:
            threading.Thread(target=dribble, daemon=True).start()
            time.sleep(0.2)  # the slow client has sent its first byte
            for i in range(5):
                began = time.monotonic()
                client.sendto(query("web", 1, i), udp.getsockname())
                assert answers(client.recv(512))[::2] == (i, ["10.9.0.7"])
                assert time.monotonic() - began < 0.5, "a UDP answer waited for a TCP client"
                began = time.monotonic()
                with socket.create_connection(tcp.getsockname(), timeout=5) as c:
                    a, b = query("web", 1, 1), query("example.test", 1, 2)
                    c.sendall(struct.pack("!H", len(a)) + a + struct.pack("!H", len(b)) + b)
                    got = {}
                    for _ in range(2):
                        size = struct.unpack("!H", _exact(c, 2))[0]
                        qid, _flags, addrs = answers(_exact(c, size))
                        got[qid] = addrs
                assert got == {1: ["10.9.0.7"], 2: ["192.0.2.77"]}
                assert time.monotonic() - began < 0.5, "a TCP client waited for another"
                time.sleep(0.3)
            # the slow client: dropped TIMEOUT after it connected, although it kept sending
            began = time.monotonic()
            assert slow.recv(1) == b""
            assert time.monotonic() - began < dns.TIMEOUT + 1
            old = [socket.create_connection(tcp.getsockname(), timeout=5) for _ in range(dns.MAX_STREAMS + 8)]
            idle += old
            time.sleep(0.3)
            assert len(r.streams) <= dns.MAX_STREAMS
            assert old[0].recv(1) == b""  # the oldest went first
        finally:
            stop.set()
            for c in idle:
                c.close()


def _exact(c: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


@pytest.mark.parametrize("name", ["-lead", "a b", "x/y", "", "ümlaut"])
def test_run_and_network_create_refuse_the_same_network_names(tmp_path, name):
    """One rule (Docker's) for a network's name, whether `run --network` names one or
    `network create` makes one."""
    from runtime.network import networks
    from runtime.options import RunOptions
    from storage.metadata import MetadataDB

    with pytest.raises(InvalidOption, match="invalid network name"):
        RunOptions(network=name, command=["true"]).validate()
    with pytest.raises(InvalidOption, match="invalid network name"):
        networks.create(MetadataDB(tmp_path / "m.db"), name)
    RunOptions(network="a.b_c-1", command=["true"]).validate()


def test_dns_responder_answers_on_descriptors_past_1024(tmp_path, upstream):
    """The responder waits with poll: select refused its sockets once their descriptors were
    past 1024 (a process with many open, as a test worker holding snapshots is), and the
    responder died without answering."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    # garbage of earlier tests in this worker (a socket, a database) closed by the collector
    # between the filling and the responder's sockets would leave a low descriptor free for them
    gc.collect()
    gc.disable()
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        with responder(tmp_path, [upstream]) as (r, client):
            assert r.udp.fileno() > 1024
            client.sendto(query("web", 1, 9), r.udp.getsockname())
            assert answers(client.recv(512))[::2] == (9, ["10.9.0.7"])
            with socket.create_connection(r.tcp.getsockname(), timeout=5) as c:
                q = query("web", 1, 10)
                c.sendall(struct.pack("!H", len(q)) + q)
                size = struct.unpack("!H", _exact(c, 2))[0]
                assert answers(_exact(c, size))[::2] == (10, ["10.9.0.7"])
    finally:
        gc.enable()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_tcp_client_cannot_take_every_upstream_slot(tmp_path):
    """Hundreds of forwarded queries in one TCP send: at most STREAM_QUERIES of them wait
    upstream at once (they took all MAX_PENDING sockets, and every other client got SERVFAIL)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # an upstream that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        with responder(tmp_path, [silent.getsockname()]) as (r, client):
            with socket.create_connection(r.tcp.getsockname(), timeout=5) as c:
                burst = b"".join(struct.pack("!H", len(q)) + q
                                 for q in (query(f"n{i}.example.test", 1, i) for i in range(300)))
                c.sendall(burst)
                time.sleep(0.5)
                assert 0 < len(r.pending) <= dns.STREAM_QUERIES
                client.sendto(query("web", 1, 5), r.udp.getsockname())  # names of the network still answered
                assert answers(client.recv(512))[::2] == (5, ["10.9.0.7"])
    finally:
        silent.close()
