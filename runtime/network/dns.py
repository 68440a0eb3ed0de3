"""The embedded DNS responder of a user-defined network, as podman's aardvark-dns does it.

One small process per network with containers, in the host's namespace,
listening on the bridge's gateway address, port 53 (UDP and TCP); the
containers' /etc/resolv.conf names it. It answers A queries for the names
of the network's containers (name, --network-alias, short ID) from the
leases, and forwards every other query to the host's own resolvers
(loopback ones included: it runs on the host). It outlives the soko that
started it; the last container's `down` stops it, and it also leaves on its
own once its network has no container left.

soko binds its sockets and hands them over, so a container can query it the
moment it starts. The process holds a lock on its pid file for as long as
it lives: a free lock means no responder.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, TypeVar

from ..waiting import ready

T = TypeVar("T")
TTL = 600
TIMEOUT = 2.0
MAX_PENDING = 256  # forwarded queries awaiting an answer, a socket each
MAX_STREAMS = 64  # TCP clients at once; beyond, the oldest goes
STREAM_QUERIES = 8  # a TCP client's queries in flight; more wait in its socket
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from runtime.network.dns import main; "
        "main(sys.argv[2:])")


def _pid_path(state_dir: str, bridge: str) -> str:
    return os.path.join(state_dir, f"dns-{bridge}.pid")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def ensure(state_dir: str, bridge: str, gateway: str) -> None:
    """Start the responder of `bridge` unless it runs (called under the host's network lock)."""
    from ..monitor_spawn import code_root, detached

    fd = os.open(_pid_path(state_dir, bridge), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if not _try_lock(fd):
            return  # alive
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((gateway, 53))
            tcp.bind((gateway, 53))
            tcp.listen(64)
            detached([sys.executable, "-S", "-c", BOOT, code_root(), state_dir, bridge,
                      str(udp.fileno()), str(tcp.fileno()), str(fd)], [udp.fileno(), tcp.fileno(), fd])
        finally:
            udp.close()
            tcp.close()
    finally:
        os.close(fd)


def stop(state_dir: str, bridge: str) -> None:
    """Stop the responder of `bridge` and wait until it is gone (idempotent)."""
    path = _pid_path(state_dir, bridge)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        deadline = time.monotonic() + 3
        while not _try_lock(fd):
            text = os.pread(fd, 32, 0).decode().strip()
            if text.isdigit():
                try:
                    os.kill(int(text), signal.SIGTERM)  # the lock's holder: the responder itself
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.unlink(path)
    finally:
        os.close(fd)


# -- the protocol ------------------------------------------------------------------------------------
def question(msg: bytes) -> tuple[str, int, int] | None:
    """(name, qtype, end offset of the question) of a query, None when it is not one."""
    if len(msg) < 12 or msg[2] & 0x80 or struct.unpack_from("!H", msg, 4)[0] != 1:
        return None
    off, labels = 12, []
    while off < len(msg):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0:
            return None
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    if off + 4 > len(msg):
        return None
    qtype = struct.unpack_from("!H", msg, off)[0]
    return ".".join(labels).lower(), qtype, off + 4


def reply(query: bytes, end: int, addresses: list[str], rcode: int = 0) -> bytes:
    """An authoritative answer with A records for `addresses` (none: NODATA, or `rcode`)."""
    flags = 0x8000 | (query[2] & 0x79) << 8 | 0x0400 | 0x0080 | rcode
    head = query[:2] + struct.pack("!HHHHH", flags, 1, len(addresses), 0, 0)
    body = query[12:end]
    for a in addresses:
        body += struct.pack("!HHHIH", 0xC00C, 1, 1, TTL, 4) + socket.inet_aton(a)
    return head + body


def upstreams(resolv_conf: str = "/etc/resolv.conf", exclude: str = "") -> list[tuple[str, int]]:
    """The host's resolvers (address, port 53), loopback ones included, but not ourselves."""
    out = []
    try:
        with open(resolv_conf) as f:
            for line in f:
                words = line.split()
                if words[:1] == ["nameserver"] and len(words) > 1 and ":" not in words[1] and words[1] != exclude:
                    out.append((words[1], 53))
    except OSError:
        pass
    return out


@dataclass
class Stream:
    """A TCP client: the bytes of its next query so far, the answers we owe it.
    Served in the poll loop like the rest, so a slow one stalls nobody; it is
    dropped when it has been idle (no whole query, no answer taken) for TIMEOUT."""
    conn: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    waiting: int = 0  # its queries forwarded upstream, not answered yet
    eof: bool = False  # it sent all it will

    def wants_input(self) -> bool:
        return not self.eof and not self.outbox and self.waiting < STREAM_QUERIES

    def finished(self, now: float) -> bool:
        return not self.waiting and ((self.eof and not self.outbox and not self.inbox) or now > self.deadline)

    def io(self, call: Callable[[], T]) -> T | None:
        """call() on the socket; None when it would block, or failed (then the stream is done)."""
        try:
            return call()
        except BlockingIOError:
            return None
        except OSError:
            self.eof = True
            self.outbox.clear()
            return None


class Responder:
    def __init__(self, state_dir: str, bridge: str, udp: socket.socket, tcp: socket.socket,
                 servers: list[tuple[str, int]] | None = None):
        import sqlite3

        self.state_dir, self.bridge, self.udp, self.tcp = state_dir, bridge, udp, tcp
        self.tcp.setblocking(False)
        self.db = sqlite3.connect(f"file:{os.path.join(state_dir, 'leases.db')}?mode=ro", uri=True, timeout=5,
                                  check_same_thread=False)
        self.servers = upstreams(exclude=udp.getsockname()[0]) if servers is None else servers
        # upstream socket -> (query, where its answer goes, deadline, attempt)
        self.pending: dict[socket.socket, tuple[bytes, Callable[[bytes], None], float, int]] = {}
        self.streams: dict[socket.socket, Stream] = {}  # TCP clients, oldest first

    def lookup(self, name: str) -> list[str] | None:
        out = []
        for names, address in self.db.execute("SELECT names, address FROM leases WHERE bridge=?", (self.bridge,)):
            if name in (n.lower() for n in json.loads(names)):
                out.append(address)
        return out or None

    def answer(self, msg: bytes) -> bytes | None:
        """Our own answer, or None to forward the query."""
        q = question(msg)
        if q is None:
            return None
        name, qtype, end = q
        found = self.lookup(name)
        if found is None:
            return None
        return reply(msg, end, found if qtype == 1 else [])

    def forward(self, msg: bytes, send: Callable[[bytes], None], attempt: int = 0) -> None:
        """Ask the upstreams in turn; `send(answer)` when one answers, a SERVFAIL
        (or nothing, for what is no query) when none does."""
        if attempt >= len(self.servers) or len(self.pending) >= MAX_PENDING:
            q = question(msg)
            send(reply(msg, q[2], [], 2) if q is not None else b"")  # SERVFAIL
            return
        s = None
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(self.servers[attempt])
            s.send(msg)
        except OSError:
            if s is not None:
                s.close()
            self.forward(msg, send, attempt + 1)
            return
        self.pending[s] = (msg, send, time.monotonic() + TIMEOUT, attempt)

    def _to_udp(self, client: tuple, out: bytes) -> None:
        if out:
            try:
                self.udp.sendto(out, client)
            except OSError:
                pass  # the client's to retry

    def _to_stream(self, conn: socket.socket, out: bytes) -> None:
        st = self.streams.get(conn)
        if st is None:
            return  # gone meanwhile
        st.waiting -= 1
        if out:
            st.outbox += struct.pack("!H", len(out)) + out
        st.deadline = time.monotonic() + TIMEOUT

    def accept(self) -> None:
        try:
            conn, _ = self.tcp.accept()
        except OSError:
            return
        conn.setblocking(False)
        if len(self.streams) >= MAX_STREAMS:
            self.drop(next(iter(self.streams)))
        self.streams[conn] = Stream(conn, time.monotonic() + TIMEOUT)

    def drop(self, conn: socket.socket) -> None:
        del self.streams[conn]
        conn.close()

    def read(self, st: Stream) -> None:
        data = st.io(lambda: st.conn.recv(65537))
        if data == b"":
            st.eof = True  # it sent all it will
        if not data:
            return
        st.inbox += data
        self.parse(st)

    def parse(self, st: Stream) -> None:
        """Serve the whole queries in `st`'s inbox, at most STREAM_QUERIES of them in flight: one
        recv may hold thousands, and forwarding them all would take every upstream slot
        (MAX_PENDING) from every other client; the rest wait until answers come back."""
        while (st.waiting < STREAM_QUERIES and len(st.inbox) >= 2
               and len(st.inbox) >= 2 + (size := struct.unpack_from("!H", st.inbox)[0])):
            msg = bytes(st.inbox[2:2 + size])
            del st.inbox[:2 + size]
            st.deadline = time.monotonic() + TIMEOUT
            st.waiting += 1
            out = self.answer(msg)
            if out is not None:
                self._to_stream(st.conn, out)
            else:
                self.forward(msg, partial(self._to_stream, st.conn))

    def write(self, st: Stream) -> None:
        sent = st.io(lambda: st.conn.send(st.outbox))
        if sent is None:
            return
        del st.outbox[:sent]
        st.deadline = time.monotonic() + TIMEOUT

    def alone(self) -> bool:
        """No container left on the network: checked under the host's network lock, so no
        container can be joining meanwhile (the lock held all its life makes this exit final)."""
        fd = os.open(os.path.join(self.state_dir, "lock"), os.O_RDWR | os.O_CLOEXEC)
        if not _try_lock(fd):
            os.close(fd)
            return False
        n = self.db.execute("SELECT COUNT(*) FROM leases WHERE bridge=?", (self.bridge,)).fetchone()[0]
        if n:
            os.close(fd)
            return False
        return True  # exit with the lock held: nothing can start until this process is gone

    def run(self) -> None:
        next_check = time.monotonic() + 1
        while True:
            reading = [self.udp, self.tcp, *self.pending, *(c for c, st in self.streams.items() if st.wants_input())]
            writing = [c for c, st in self.streams.items() if st.outbox]
            readable, writable = ready(reading, writing, 0.5)  # poll: its descriptors may be past 1024
            for s in writable:
                if s in self.streams:
                    self.write(self.streams[s])
            for st in list(self.streams.values()):  # queries held back while others were in flight
                if st.inbox and st.waiting < STREAM_QUERIES:
                    self.parse(st)
            for s in readable:
                if s is self.udp:
                    try:
                        msg, client = self.udp.recvfrom(65535)
                    except OSError:
                        continue
                    out = self.answer(msg)
                    if out is not None:
                        self._to_udp(client, out)
                    else:
                        self.forward(msg, partial(self._to_udp, client))
                elif s is self.tcp:
                    self.accept()
                elif s in self.streams:
                    self.read(self.streams[s])
                elif s in self.pending:
                    msg, send, _deadline, attempt = self.pending.pop(s)
                    try:
                        out = s.recv(65535)
                    except OSError:  # refused: the next upstream
                        out = b""
                    s.close()
                    if out:
                        send(out)
                    else:
                        self.forward(msg, send, attempt + 1)
            now = time.monotonic()
            for s, (msg, send, deadline, attempt) in list(self.pending.items()):
                if now > deadline:
                    del self.pending[s]
                    s.close()
                    self.forward(msg, send, attempt + 1)
            for conn in [c for c, st in self.streams.items() if st.finished(now)]:
                self.drop(conn)
            if now > next_check:
                if self.alone():
                    return
                next_check = now + 1


def main(argv: list[str]) -> None:
    state_dir, bridge, udp_fd, tcp_fd, lock_fd = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    for fd in (udp_fd, tcp_fd, lock_fd):
        os.set_inheritable(fd, False)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
    udp = socket.socket(fileno=udp_fd)
    tcp = socket.socket(fileno=tcp_fd)
    Responder(state_dir, bridge, udp, tcp).run()
