"""`soko tag` accepts and refuses the same target names as Docker Engine's
`docker tag` (the Debian 20.10 client and daemon)."""
from __future__ import annotations

import pytest

from tests.conftest import need_root

pytestmark = [pytest.mark.root, pytest.mark.interop]

TARGETS = [
    "plain:1", "team/app:v1.2", "localhost:5000/team/app:1", "localhost/app:1", "Up.io/a:1", "a/b:UP",
    "a/b__c.d-e:_x", "app:" + "t" * 128,  # (not "[::1]:5000/x": IPv6 hosts came to Docker after 20.10)
    "UPPER/case:1", "Upper:1", "A_B/c:1", "localhost/UP:1", "up.io/UP:1", "app:täg", "app:t\u0661",
    "fóo/bar:1", "app:latest\n", "team/app\n", "app:-lead", "app:" + "t" * 129, "a//b:1", "app:a:b",
]


def test_tag_names_as_docker_takes_them(soko, busybox_rootfs, docker_engine):
    need_root()
    soko("import", busybox_rootfs, "busybox:local")
    differ = []
    for target in TARGETS:
        ours = soko("tag", "busybox:local", target, check=False).returncode == 0
        theirs = docker_engine("tag", "busybox:local", target, check=False).returncode == 0
        if ours != theirs:
            differ.append((target, f"soko {'accepts' if ours else 'refuses'}, docker {'accepts' if theirs else 'refuses'}"))
    assert differ == []
    assert sum(docker_engine("tag", "busybox:local", t, check=False).returncode == 0 for t in TARGETS) == 8  # the first eight
