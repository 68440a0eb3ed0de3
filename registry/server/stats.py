"""What the registry holds and what its garbage collections freed, read from
the metadata: one snapshot for /metrics and the web UI. Reads scan the link
table: call it off the event loop (`Registry.run`)."""
from __future__ import annotations

from .meta import GCRun, RegistryMeta, RegistryStats

__all__ = ["GCRun", "RegistryStats", "registry_stats"]


def registry_stats(meta: RegistryMeta) -> RegistryStats:
    return meta.stats()
