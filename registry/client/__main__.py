"""Temporary manual entry until `soko push/pull/copy/login` exist:

    python -m registry.client [--root DIR] push [--insecure] [-j N] IMAGE [DEST]
    python -m registry.client [--root DIR] pull [--platform os/arch] REF
    python -m registry.client [--root DIR] copy SRC DST
    python -m registry.client login -u USER [--password-stdin] REGISTRY
    python -m registry.client logout REGISTRY
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from storage.errors import StorageError
from storage.images import ImageStore
from storage.model import Platform

from . import copy, login, logout, pull, push
from .errors import ClientError
from .options import ClientOptions, ProgressEvent


def _default_root() -> str:
    if os.environ.get("SOKO_ROOT"):
        return os.environ["SOKO_ROOT"]
    if os.geteuid() == 0:
        return "/var/lib/soko"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "soko")


def _printer(quiet: bool):
    last: dict[str, str] = {}

    def show(ev: ProgressEvent) -> None:
        if quiet or last.get(ev.id) == ev.action:
            return
        last[ev.id] = ev.action
        print(f"{ev.id}: {ev.action}", file=sys.stderr, flush=True)
    return show


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m registry.client")
    ap.add_argument("--root", default=_default_root())
    ap.add_argument("-q", "--quiet", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("push", "pull", "copy", "login", "logout"):
        p = sub.add_parser(name)
        p.add_argument("--insecure", action="store_true")
        p.add_argument("--ca-file")
        p.add_argument("-j", "--jobs", type=int, default=4)
        if name == "push":
            p.add_argument("image")
            p.add_argument("dest", nargs="?")
        elif name == "pull":
            p.add_argument("--platform")
            p.add_argument("ref")
        elif name == "copy":
            p.add_argument("src")
            p.add_argument("dst")
        elif name == "login":
            p.add_argument("-u", "--username", required=True)
            p.add_argument("-p", "--password")
            p.add_argument("--password-stdin", action="store_true")
            p.add_argument("registry")
        else:
            p.add_argument("registry")
    a = ap.parse_args(argv)
    opts = ClientOptions(insecure=a.insecure, jobs=a.jobs, ca_file=a.ca_file)
    show = _printer(a.quiet)
    t0 = time.monotonic()
    try:
        if a.cmd == "push":
            r = push(ImageStore(a.root), a.image, a.dest, opts, show)
            print(f"{r.reference}: digest: {r.digest} size: {r.size}")
        elif a.cmd == "pull":
            plat = Platform.parse(a.platform) if a.platform else None
            r = pull(ImageStore(a.root), a.ref, plat, opts, show)
            print(f"Digest: {r.digest}\n{r.reference}")
        elif a.cmd == "copy":
            store = ImageStore(a.root) if "soko:" in (a.src[:5], a.dst[:5]) else None
            r = copy(a.src, a.dst, opts, show, store)
            print(f"Copied {r.source} -> {r.destination} ({r.digest})")
        elif a.cmd == "login":
            password = sys.stdin.read().rstrip("\n") if a.password_stdin else a.password
            where = login(a.registry, a.username, password or "", opts)
            print(f"Login Succeeded (credentials in {where})")
        else:
            print("Removed login credentials" if logout(a.registry, opts) else "Not logged in")
    except (ClientError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not a.quiet:
        print(f"({time.monotonic() - t0:.2f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
