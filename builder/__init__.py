"""Dockerfile -> image."""
