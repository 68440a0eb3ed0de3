"""A container's start on a bridge: soko's NAT rules go in (`nft`, in the background) while the
container is set up, and its process runs only once they are in; rules that fail stop the start
with nothing left. `nft` is slowed or broken here by a wrapper first on PATH."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import IN_CI

from .containers_helpers import assert_nothing_left, bb  # noqa: F401 - bb is a fixture
from .network_helpers import assert_network_clean, free_port, leases_of

CHECK = "test -e /mnt/rules-in && echo after || echo before; touch /mnt/ran"


def _nft_wrapper(tmp_path, body: str) -> dict:
    real = shutil.which("nft")
    if real is None:  # make test installs nftables; the iptables backend has no background step
        if IN_CI:
            pytest.fail("nft is not installed (make test installs nftables)")
        pytest.skip("nft is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nft").write_text(f"#!/bin/sh\n{body.format(real=real)}\n")
    (bin_dir / "nft").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SOKO_FIREWALL": "nft"}


@pytest.mark.parametrize("detach", [False, True])
def test_the_process_runs_only_once_the_rules_are_in(soko, bb, tmp_path, detach):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # nft that takes 0.3 s, then says so: the container's process must not run before
    env = _nft_wrapper(tmp_path, f'sleep 0.3; {{real}} "$@"; s=$?; [ "$1" = -f ] && touch {mnt}/rules-in; exit $s')
    port = free_port()
    args = ["run", "-p", f"127.0.0.1:{port}:80", "-v", f"{mnt}:/mnt", bb, "sh", "-c", CHECK]
    if detach:
        cid = soko(*args[:1], "-d", *args[1:], env=env).stdout.strip()
        soko("wait", cid)
        assert soko("logs", cid).stdout == "after\n"
        soko("rm", cid, env=env)
    else:
        assert soko(*args[:1], "--rm", *args[1:], env=env).stdout == "after\n"
    assert_nothing_left(soko, [])


def test_failing_rules_stop_the_start_and_leave_nothing(soko, bb, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _nft_wrapper(tmp_path, 'if [ "$1" = -f ]; then cat >/dev/null; echo "Error: refused by test" >&2; '
                                 'exit 1; fi; exec {real} "$@"')
    port = free_port()
    r = soko("run", "-d", "--name", "never", "-p", f"127.0.0.1:{port}:80", "-v", f"{mnt}:/mnt", bb,
             "sh", "-c", CHECK, env=env, check=False)
    assert r.returncode == 125 and r.stdout == ""
    assert r.stderr == "soko: nft -f: Error: refused by test\n"
    assert not (mnt / "ran").exists()  # the container's process never ran
    cid = soko("inspect", "--format", "{{.Id}}", "never").stdout.strip()
    assert leases_of([cid]) == []
    assert_network_clean([cid])
    soko("rm", "never", env=env)
    assert_nothing_left(soko, [cid])
