"""`python -m registry.server`: run the registry (what `soko serve` wraps).

Prints one line, `listening on URL`, once the socket accepts connections.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import RegistryError
from .config import ServerConfig
from .runner import ServerInfo, run


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(prog="python -m registry.server", description=__doc__)
    p.add_argument("--addr", help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--root", help="registry data directory")
    p.add_argument("--config", help="JSON config file (flags override it)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-self-signed", action="store_true")
    p.add_argument("--htpasswd", help="bcrypt htpasswd file: require Basic auth")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--gc-interval", type=float, help="seconds between online garbage collections")
    args = p.parse_args(argv)
    overrides = {"addr": args.addr, "root": args.root, "htpasswd": args.htpasswd,
                 "read_only": True if args.read_only else None}
    if args.tls_cert or args.tls_key or args.tls_self_signed:
        overrides["tls"] = {"cert": args.tls_cert, "key": args.tls_key, "self_signed": args.tls_self_signed}
    if args.config:
        cfg = ServerConfig.from_file(args.config, **overrides)
    else:
        cfg = ServerConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    if args.gc_interval is not None:
        cfg.gc.interval = args.gc_interval
    return cfg


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = parse_args(argv)

        def ready(info: ServerInfo) -> None:
            print(f"listening on {info.url}", flush=True)

        run(cfg, on_ready=ready)
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
