"""Fixtures for builder tests: a store holding busybox (test modules may override `store`)."""
from __future__ import annotations

import pytest

from tests.builder.helpers import import_busybox
from tests.conftest import need_root


@pytest.fixture
def store(store_root, busybox_rootfs):
    need_root()  # RUN steps, and owners other than our own
    from storage.images import ImageStore

    s = ImageStore(store_root)
    import_busybox(s, busybox_rootfs)
    return s
