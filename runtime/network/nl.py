"""rtnetlink requests with pyroute2's message classes, over a plain synchronous socket.

pyroute2 encodes and decodes the messages (links with their nested link
info, addresses, routes). Its `IPRoute` is not used: in 0.9 it runs on
asyncio, and the package's __init__ imports every protocol it knows, which
costs 100-250 ms on every container start. Importing only the message
modules, with the package entered as a bare namespace (`_lean_import`),
costs about 30 ms; the socket loop below is all the rest a container needs.

A socket belongs to the network namespace it was created in, so
`Netlink()` opened while a thread is inside a container's namespace keeps
configuring that namespace after the thread has gone back.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Any

from ..errors import ContainerError

IFF_UP = 0x1
AF_INET = socket.AF_INET
RT_TABLE_MAIN = 254
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26


class NetlinkError(ContainerError):
    def __init__(self, code: int, what: str):
        super().__init__(f"{what}: {os.strerror(code)}")
        self.code = code


def _lean_import() -> Any:
    """pyroute2's rtnl message modules without running the package's __init__ (see the module doc)."""
    if "pyroute2" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("pyroute2")
        if spec is None or not spec.submodule_search_locations:
            raise ContainerError("bridge networking needs pyroute2 (pip install pyroute2)")
        pkg = types.ModuleType("pyroute2")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["pyroute2"] = pkg
    from pyroute2.netlink.rtnl import ifaddrmsg, ifinfmsg, rtmsg

    return ifinfmsg.ifinfmsg, ifaddrmsg.ifaddrmsg, rtmsg.rtmsg


class Netlink:
    """One NETLINK_ROUTE socket in the network namespace of the thread that opened it."""

    def __init__(self) -> None:
        self.ifinfmsg, self.ifaddrmsg, self.rtmsg = _lean_import()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the exchange ----------------------------------------------------------------------------
    def _send(self, msg, kind: int, flags: int) -> int:
        self.seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        return self.seq

    def request(self, msg, kind: int, flags: int = 0, what: str = "netlink") -> None:
        """Send one request and wait for its acknowledgement; NetlinkError on a refusal."""
        seq = self._send(msg, kind, flags | NLM_F_ACK)
        while True:
            for mtype, mseq, payload in self._messages():
                if mseq != seq or mtype != NLMSG_ERROR:
                    continue
                code = -struct.unpack_from("i", payload)[0]
                if code:
                    raise NetlinkError(code, what)
                return

    def dump(self, msg, kind: int, cls) -> list:
        """A dump request's answers, decoded with `cls`."""
        seq = self._send(msg, kind, NLM_F_DUMP)
        out = []
        while True:
            for mtype, mseq, payload, raw in self._messages(raw=True):
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("i", payload)[0]
                    if code:
                        raise NetlinkError(code, "netlink dump")
                    continue
                m = cls(raw)
                m.decode()
                out.append(m)

    def _messages(self, raw: bool = False):
        data = self.sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _flags, seq, _pid = struct.unpack_from("IHHII", data, off)
            if length < 16:
                break
            payload = data[off + 16:off + length]
            yield (mtype, seq, payload, data[off:off + length]) if raw else (mtype, seq, payload)
            off += (length + 3) & ~3

    # -- links -------------------------------------------------------------------------------------
    def link_index(self, name: str) -> int | None:
        msg = self.ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        seq = self._send(msg, RTM_GETLINK, NLM_F_ACK)
        while True:
            for mtype, mseq, payload, raw in self._messages(raw=True):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("i", payload)[0]
                    if code in (errno.ENODEV, errno.ENOENT):
                        return None
                    if code:
                        raise NetlinkError(code, f"link {name}")
                    continue
                if mtype == RTM_NEWLINK:
                    return struct.unpack_from("i", payload, 4)[0]

    def add_bridge(self, name: str) -> None:
        msg = self.ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
        self.request(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create bridge {name}")

    def add_veth(self, name: str, master: int, peer: str, peer_netns_fd: int, peer_mac: str) -> None:
        """A veth pair: `name` here, up and enslaved to `master`; `peer` in the other namespace."""
        msg = self.ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [
            ("IFLA_IFNAME", name), ("IFLA_MASTER", master),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [
                ("VETH_INFO_PEER", {"attrs": [("IFLA_IFNAME", peer), ("IFLA_ADDRESS", peer_mac),
                                              ("IFLA_NET_NS_FD", peer_netns_fd)]})]})]}),
        ]
        self.request(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create veth {name}")

    def set_up(self, index: int) -> None:
        msg = self.ifinfmsg()
        msg["index"] = index
        msg["flags"] = msg["change"] = IFF_UP
        self.request(msg, RTM_NEWLINK, 0, "link up")

    def delete_link(self, name: str) -> bool:
        """Delete link `name`; False when there is none."""
        msg = self.ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            self.request(msg, RTM_DELLINK, 0, f"delete {name}")
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # -- addresses and routes ------------------------------------------------------------------------
    def add_address(self, index: int, address: str, prefix: int) -> None:
        msg = self.ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = AF_INET, prefix, index
        msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        self.request(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, f"address {address}/{prefix}")

    def addresses(self, index: int) -> list[tuple[str, int]]:
        msg = self.ifaddrmsg()
        msg["family"] = AF_INET
        out = []
        for m in self.dump(msg, RTM_GETADDR, self.ifaddrmsg):
            if m["index"] == index:
                out.append((m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"), m["prefixlen"]))
        return out

    def add_default_route(self, gateway: str) -> None:
        msg = self.rtmsg()
        msg["family"], msg["table"], msg["proto"], msg["scope"], msg["type"] = AF_INET, RT_TABLE_MAIN, 3, 0, 1
        msg["attrs"] = [("RTA_GATEWAY", gateway)]
        self.request(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"default route via {gateway}")

    def routes(self) -> list[tuple[str, int, str]]:
        """IPv4 routes of every table: (destination, prefix length, device index as text)."""
        msg = self.rtmsg()
        msg["family"] = AF_INET
        out = []
        for m in self.dump(msg, RTM_GETROUTE, self.rtmsg):
            dst = m.get_attr("RTA_DST")
            if dst:
                out.append((dst, m["dst_len"], str(m.get_attr("RTA_OIF"))))
        return out
