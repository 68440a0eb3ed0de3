"""/etc/hosts, /etc/resolv.conf and /etc/hostname, written per container.

They are bind-mounted over the image's files, as Docker does, so the image
itself is never modified. They live on a small tmpfs that the container's
first process mounts in its own mount namespace: nothing on disk to write or
delete, and nothing that outlives the container.
"""
from __future__ import annotations

import os
from pathlib import Path

HOSTS_BASE = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = ["8.8.8.8", "8.8.4.4"]


def host_hostname() -> str:
    return os.uname().nodename


def hosts(hostname: str, network: str) -> str:
    if network == "host":
        try:
            return Path("/etc/hosts").read_text()
        except OSError:
            return HOSTS_BASE
    return HOSTS_BASE


def resolv_conf(network: str, host_file: str = "/etc/resolv.conf", dns_server: str = "") -> str:
    """Host networking shares the host's file; otherwise loopback resolvers are
    unreachable from the container, so they are dropped (Docker's rule). On a
    user-defined network the network's DNS responder (`dns_server`) is the only
    nameserver: it forwards what it does not know to the host's resolvers."""
    try:
        text = Path(host_file).read_text()
    except OSError:
        text = ""
    if network == "host":
        return text
    if dns_server:
        kept = [line for line in text.splitlines() if line.split()[:1] in (["search"], ["domain"])]
        return "\n".join(kept + [f"nameserver {dns_server}", "options ndots:0"]) + "\n"
    lines: list[str] = []
    servers = 0
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            addr = words[1]
            if addr.startswith("127.") or addr == "::1":
                continue
            servers += 1
        lines.append(line)
    if servers == 0:
        lines += [f"nameserver {a}" for a in FALLBACK_DNS]
    return "\n".join(lines) + "\n"


NAMES = {"/etc/hosts": "hosts", "/etc/hostname": "hostname", "/etc/resolv.conf": "resolv.conf"}


def contents(hostname: str, network: str, dns_server: str = "") -> dict[str, str]:
    """{file name: text} for the three files."""
    return {"hosts": hosts(hostname, network), "hostname": hostname + "\n",
            "resolv.conf": resolv_conf(network, dns_server=dns_server)}


def with_address(files: dict[str, str], address: str, hostname: str) -> dict[str, str]:
    """The files once the container has its address: /etc/hosts names it (Docker's last line)."""
    out = dict(files)
    out["hosts"] = out.get("hosts", HOSTS_BASE) + f"{address}\t{hostname}\n"
    return out


def write_into(directory: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        fd = os.open(os.path.join(directory, name),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def mounts(directory: str) -> dict[str, str]:
    """{container path: host file} once the files are in `directory`."""
    return {path: os.path.join(directory, name) for path, name in NAMES.items()}
