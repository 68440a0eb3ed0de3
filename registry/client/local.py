"""Moving an image between two local stores (copy's temporary store <-> the real one).

Blobs are hard-linked when both stores share a filesystem (copy puts its
temporary store under the local store's ingest/ for that reason), else
copied; both stores hold verified content, so nothing is hashed again.
"""
from __future__ import annotations

import os
import shutil

from storage.errors import StorageError
from storage.images import ImageStore
from storage.model import Index, Manifest

from .errors import ClientError


def _blob(src: ImageStore, dst: ImageStore, digest: str) -> None:
    if dst.blobs.has(digest):
        return
    tmp = dst.blobs.new_temp()
    try:
        os.link(src.blobs.local_path(digest), tmp)
    except OSError:
        shutil.copyfile(src.blobs.local_path(digest), tmp)
    dst.blobs.adopt(tmp, digest)


def _image(src: ImageStore, dst: ImageStore, m: Manifest) -> None:
    for d in m.references():
        _blob(src, dst, d.digest)
    dst.add_manifest(m.raw, m.media_type)


def transfer(src: ImageStore, dst: ImageStore, digest: str, tag: str | None = None) -> str:
    """Make the image (or index, with the children `src` has) `digest` exist in `dst`."""
    try:
        top = src.manifest(digest)
        if isinstance(top, Index):
            for child in top.manifests:
                if src.blobs.has(child.digest):
                    m = src.manifest(child.digest)
                    if isinstance(m, Manifest):
                        _image(src, dst, m)
            _blob(src, dst, top.digest)
            dst.add_index(top.raw, top.media_type)
        else:
            _image(src, dst, top)
        if tag:
            dst.tag(tag, digest)
    except StorageError as e:
        raise ClientError(str(e)) from None
    return digest
