"""soko: soko."""
