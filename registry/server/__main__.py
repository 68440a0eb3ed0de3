"""`python -m registry.server`: run the registry (what `soko serve` wraps).

Prints one line, `listening on URL`, once the socket accepts connections.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import RegistryError
from .config import ServerConfig, flag_overrides
from .runner import ServerInfo, run


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(prog="python -m registry.server", description=__doc__)
    p.add_argument("--addr", help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--root", help="registry data directory")
    p.add_argument("--config", help="TOML config file (flags override it; see registry/CONFIG.md)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-self-signed", action="store_true")
    p.add_argument("--htpasswd", help="bcrypt htpasswd file: users who may sign in")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--audit-log", help="append JSON lines of pushes, pulls, deletes, logins, refusals here")
    p.add_argument("--token", action="store_true", help="Docker token auth with the built-in /token endpoint")
    p.add_argument("--token-key", help="private key the built-in token endpoint signs with")
    p.add_argument("--token-realm", help="token endpoint URL clients are sent to")
    p.add_argument("--token-issuer", help="issuer name tokens carry")
    p.add_argument("--token-service", help="service name (token audience)")
    p.add_argument("--token-cert", help="an external issuer's certificate bundle (its tokens are trusted)")
    p.add_argument("--proxy", metavar="URL", help="a pull-through cache of the registry at URL")
    p.add_argument("--no-ui", action="store_true", help="do not serve the web UI under /ui/")
    p.add_argument("--storage", metavar="URL", help="blobs in S3: s3://BUCKET/PREFIX?endpoint=URL&region=R")
    p.add_argument("--redirect", action="store_true", help="answer blob GETs with 307 to a presigned S3 URL")
    p.add_argument("--metadata", metavar="URL",
                   help="PostgreSQL for the metadata (postgresql://USER@HOST:PORT/DB); default: SQLite in the root")

    p.add_argument("--gc-interval", help="time between online garbage collections (seconds or e.g. 24h)")
    args = p.parse_args(argv)
    overrides = flag_overrides(
        addr=args.addr, root=args.root, htpasswd=args.htpasswd, read_only=args.read_only, tls_cert=args.tls_cert,
        tls_key=args.tls_key, tls_self_signed=args.tls_self_signed, token=args.token, token_key=args.token_key,
        token_realm=args.token_realm, token_issuer=args.token_issuer, token_service=args.token_service,
        token_cert=args.token_cert, audit_log=args.audit_log, gc_interval=args.gc_interval, proxy=args.proxy,
        no_ui=args.no_ui, storage=args.storage, redirect=args.redirect, metadata=args.metadata)
    return ServerConfig.load(args.config, overrides)


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
