"""Images over HTTP: server/ (aiohttp) and client/ (push, pull, copy)."""
