"""soko: registry/server."""
