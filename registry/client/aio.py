"""aiohttp, imported without the TLS context it would build for nothing.

Importing aiohttp makes a default verified SSLContext, which parses the system's whole CA
bundle: about 50 ms on these machines (a tenth of a `soko pull` of 200 MB), paid by every
push and pull, even to a plain-HTTP registry. The client never uses that context: every
request passes its own (`RegistrySession._candidates`: False for plain HTTP and --insecure,
a context built on demand for verified TLS). So the import sees a context that trusts no CA
at all: were some request ever to fall back on aiohttp's default, it would fail to verify,
never connect unverified. Everything else about aiohttp is unchanged.
"""
from __future__ import annotations

import ssl
import sys

if "aiohttp" not in sys.modules:
    _default = ssl.create_default_context

    def _trusting_nothing(*args, **kwargs) -> ssl.SSLContext:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names

    ssl.create_default_context = _trusting_nothing  # type: ignore[assignment]
    try:
        import aiohttp  # noqa: F401
        import aiohttp.payload  # noqa: F401
    finally:
        ssl.create_default_context = _default  # type: ignore[assignment]

import aiohttp  # noqa: E402

__all__ = ["aiohttp"]
