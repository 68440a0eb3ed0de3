"""Layers: writing directory trees / change sets / overlayfs upper dirs as
layer blobs, and applying layer blobs onto directories.

This module is the public face; the work is done in layers_write.py,
layers_apply.py, layers_paths.py (safe path resolution), layers_stream.py
(threaded reading and digests), layers_tar.py (the tar format) and
compression.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .compression import COMPRESSIONS, GZIP, NONE, ZSTD, detect
from .layers_write import (Changes, Donor, LayerInfo, resolve_epoch, write_layer,
                           write_layer_from_changes, write_layer_from_overlay)

if TYPE_CHECKING:
    from .layers_apply import MODES, OVERLAY, PLAIN, ApplyResult, apply_blob, apply_layer
    from .layers_stream import LayerDigests, digest_layer

# Applying and digesting layers are loaded on first use: a command that only writes layers (a
# build whose base is unpacked already) does not import them (module __getattr__, PEP 562).
_ON_FIRST_USE = {**dict.fromkeys(("MODES", "OVERLAY", "PLAIN", "ApplyResult", "apply_blob", "apply_layer"),
                                 "layers_apply"),
                 **dict.fromkeys(("LayerDigests", "digest_layer"), "layers_stream")}


def __getattr__(name: str):
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __package__), name)
    globals()[name] = value
    return value

__all__ = [
    "COMPRESSIONS", "GZIP", "ZSTD", "NONE", "detect",
    "MODES", "PLAIN", "OVERLAY", "ApplyResult", "apply_layer", "apply_blob",
    "Changes", "Donor", "LayerInfo", "resolve_epoch", "write_layer", "write_layer_from_changes",
    "write_layer_from_overlay", "LayerDigests", "digest_layer",
]
