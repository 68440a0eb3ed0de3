"""What a store holds besides images, read from disk for `system df`, `info` and the prunes:
containers (`<root>/containers/<id>/state.json`) and named volumes (`<root>/volumes/<name>/_data`,
as `run -v name:/path` makes them)."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # Docker's (and runtime/options.py's) rule


@dataclass
class ContainerInfo:
    id: str
    name: str | None
    image: str  # image ID
    image_ref: str
    created: float
    status: str
    running: bool
    dir: Path
    volumes: set[str] = field(default_factory=set)


def containers(root: str | os.PathLike) -> list[ContainerInfo]:
    """Every container of the store; `running` means its owning process is alive."""
    base = Path(os.path.abspath(root)) / "containers"
    out: list[ContainerInfo] = []
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return out
    for n in names:
        d = base / n
        try:
            data = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        owner = data.get("owner_pid") or data.get("pid")
        running = data.get("status") == "running" and bool(owner) and os.path.exists(f"/proc/{owner}")
        info = ContainerInfo(str(data.get("id", n)), data.get("name"), str(data.get("image", "")),
                             str(data.get("image_ref", "")), float(data.get("created") or 0),
                             "running" if running else "exited", running, d)
        pids = _process_tree(int(owner)) if running else []
        info.volumes = _volumes_named(data, pids, root)
        out.append(info)
    return out


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants: the container's processes live in their own mount namespace
    below the `soko run` that owns the container."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _volumes_named(state: dict, pids: list[int], root) -> set[str]:
    """Named volumes a container uses: from its state (`volumes`: `-v` texts, or `mounts`) and,
    while it runs, from its mount table."""
    names: set[str] = set()
    for v in state.get("volumes") or []:
        text = v if isinstance(v, str) else (v.get("Name") or v.get("name") or "") if isinstance(v, dict) else ""
        src = text.split(":", 1)[0]
        if VOLUME_NAME.fullmatch(src):
            names.add(src)
    for m in state.get("mounts") or []:
        if isinstance(m, dict) and m.get("Type", m.get("type")) == "volume":
            names.add(m.get("Name") or m.get("name") or "")
    marker = str(Path(os.path.abspath(root)) / "volumes") + "/"
    namespaces: set[str] = set()
    for pid in pids:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns in namespaces:
                continue
            namespaces.add(ns)
            with open(f"/proc/{pid}/mountinfo") as f:
                for line in f:
                    root_in_fs = line.split()[3]  # a bind mount's source, within its filesystem
                    if root_in_fs.startswith(marker):
                        names.add(root_in_fs[len(marker):].split("/", 1)[0])
        except OSError:
            continue
    names.discard("")
    return names


def volumes_dir(root: str | os.PathLike) -> Path:
    return Path(os.path.abspath(root)) / "volumes"


def volume_names(root: str | os.PathLike) -> list[str]:
    try:
        return sorted(n for n in os.listdir(volumes_dir(root)) if (volumes_dir(root) / n / "_data").is_dir())
    except FileNotFoundError:
        return []


def volumes_in_use(root: str | os.PathLike) -> dict[str, int]:
    """Volume name -> how many containers use it (Docker's LINKS)."""
    counts: dict[str, int] = {}
    for c in containers(root):
        for v in c.volumes:
            counts[v] = counts.get(v, 0) + 1
    return counts


def tree_size(path: str | os.PathLike) -> int:
    """Docker's directory.Size: bytes of the non-directory entries, hard links once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if not st.st_size or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
