"""soko: registry/client."""
