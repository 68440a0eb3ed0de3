"""Layers: writing directory trees / change sets / overlayfs upper dirs as
layer blobs, and applying layer blobs onto directories.

This module is the public face; the work is done in layers_write.py,
layers_apply.py, layers_paths.py (safe path resolution), layers_stream.py
(threaded reading and digests), layers_tar.py (the tar format) and
compression.py.
"""
from __future__ import annotations

from .compression import COMPRESSIONS, GZIP, NONE, ZSTD, detect
from .layers_apply import MODES, OVERLAY, PLAIN, ApplyResult, apply_blob, apply_layer
from .layers_stream import LayerDigests, digest_layer
from .layers_write import (Changes, Donor, LayerInfo, resolve_epoch, write_layer,
                           write_layer_from_changes, write_layer_from_overlay)

__all__ = [
    "COMPRESSIONS", "GZIP", "ZSTD", "NONE", "detect",
    "MODES", "PLAIN", "OVERLAY", "ApplyResult", "apply_layer", "apply_blob",
    "Changes", "Donor", "LayerInfo", "resolve_epoch", "write_layer", "write_layer_from_changes",
    "write_layer_from_overlay", "LayerDigests", "digest_layer",
]
