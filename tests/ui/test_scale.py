"""A registry of 1,000 repositories: the repositories page answers in under
200 ms on these machines (paged queries). Asserted with a generous margin (the
machine is shared with other test runs); bench/bench_ui.py prints the figures."""
from __future__ import annotations

import statistics
import time

import pytest

from tests.registry.teams import basic

from .conftest import USERS, open_browser, start_registry
from .images import many_repositories
from .visitor import Visitor

TARGET = 0.200  # seconds: the bound
MARGIN = 2.5  # CI runs beside other suites on two cores


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    proc = start_registry(tmp)
    clients = [proc.client(auth=basic("alice", USERS["alice"])) for _ in range(8)]
    try:
        names = many_repositories(clients, 1000)
    finally:
        for c in clients:
            c.close()
    yield proc, names
    proc.stop()


def timed(v: Visitor, path: str, runs: int = 7) -> float:
    """The median time of a full answer to `path`."""
    v.page(path)  # warm: the first query compiles the statements
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        v.page(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_the_repositories_page_of_a_thousand_repositories_is_fast(fleet):
    proc, names = fleet
    v = Visitor(proc.port)
    v.login("alice", USERS["alice"])
    html = v.page("/ui/")
    assert "Page 1 of 20 (1000 repositories)" in html  # 50 a page
    assert html.count('<a href="/ui/repositories/fleet/') == 50
    for path in ("/ui/", "/ui/?sort=size&order=desc", "/ui/?sort=pushed", "/ui/?page=20",
                 "/ui/?q=svc-09", "/ui/repositories/fleet/svc-0002"):
        took = timed(v, path)
        print(f"{path}: {took * 1000:.1f} ms")
        assert took < TARGET * MARGIN, f"{path} took {took * 1000:.0f} ms"
    assert "Page 20 of 20" in v.page("/ui/?page=20")
    v.close()


def test_the_browser_loads_it_quickly_too(tmp_path, fleet):
    proc, _ = fleet
    for b in open_browser(tmp_path, proc.url):
        b.log_in("alice", USERS["alice"])
        b.open("/ui/")
        took = []
        for _ in range(3):
            b.open("/ui/?sort=tags&order=desc")
            took.append(b.driver.execute_script(
                "var n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime") / 1000)
        print(f"browser load: {min(took) * 1000:.0f} ms")
        assert min(took) < TARGET * MARGIN
        b.shot("fleet")
