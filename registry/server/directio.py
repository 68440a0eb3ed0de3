"""Moved to storage.directio (the registry client writes pulled blobs with it too)."""
from storage.directio import ALIGN, BLOCK, DirectWriter

__all__ = ["ALIGN", "BLOCK", "DirectWriter"]
