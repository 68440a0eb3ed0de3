"""aiohttp, imported without the CA bundle it would parse for nothing.

Importing aiohttp makes two default SSLContexts, a verified one and one for `ssl=False`, and
both load the system's whole CA bundle: 50-60 ms each on these machines (a tenth of a `soko
pull` of 200 MB), paid by every push and pull, even to a plain-HTTP registry. The client never
uses the verified one: every request passes its own context (`RegistrySession._candidates`:
False for plain HTTP and --insecure, a context built on demand for verified TLS); the other
verifies nothing, so it needs no CAs. So the import sees a verified context that trusts no CA
at all (were a request ever to fall back on it, it would fail to verify, never connect
unverified), and loading default CA paths does nothing meanwhile. aiohttp is otherwise as is.
"""
from __future__ import annotations

import ssl
import sys

if "aiohttp" not in sys.modules:
    _default = ssl.create_default_context

    def _trusting_nothing(*args, **kwargs) -> ssl.SSLContext:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names

    ssl.create_default_context = _trusting_nothing  # type: ignore[assignment]
    ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401
        import aiohttp.payload  # noqa: F401
    finally:
        ssl.create_default_context = _default  # type: ignore[assignment]
        del ssl.SSLContext.set_default_verify_paths  # _ssl._SSLContext's own again

import aiohttp  # noqa: E402

__all__ = ["aiohttp"]
