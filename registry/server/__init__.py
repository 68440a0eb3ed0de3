"""The registry server: the OCI distribution API (v1.1 and Docker's
extensions) over aiohttp, on a blob store plus SQLite under one root.

    from registry.server import ServerConfig, run
    run(ServerConfig(addr="127.0.0.1:5000", root="/srv/registry"), on_ready=print)
"""
from .config import GCOptions, Limits, ServerConfig, TLSOptions
from .runner import ServerInfo, run, serve

__all__ = ["GCOptions", "Limits", "ServerConfig", "ServerInfo", "TLSOptions", "run", "serve"]
