"""Who may start what: caps per client and in total, answered with 429.

A client is its user when it authenticated, else its address (so a flood
from one host cannot take what other hosts need). Past a cap the answer is
TOOMANYREQUESTS with Retry-After, never a 500 from a resource running out.
"""
from __future__ import annotations

import errno
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from aiohttp import web

from ..errors import APIError

CLIENT = web.RequestKey("soko_client", str)
# The machine ran out of something: a client's wait-and-retry, not a server bug.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def client_key(request: web.Request, user: str | None) -> str:
    return f"user:{user}" if user else f"addr:{request.remote or '?'}"


def too_many(why: str, retry_after: float = 1) -> APIError:
    return APIError("TOOMANYREQUESTS", f"{why}, retry later",
                    headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})


class Caps:
    """Counts of something held per client, with a cap per client and one in total."""

    def __init__(self, what: str, total: int, per_client: int):
        self.what = what
        self.total_max = total
        self.client_max = per_client
        self.total = 0
        self.by_client: Counter[str] = Counter()

    def check(self, client: str, retry_after: float = 1) -> None:
        if self.total >= self.total_max:
            raise too_many(f"too many {self.what} in progress", retry_after)
        if self.by_client[client] >= self.client_max:
            raise too_many(f"too many {self.what} in progress for {client.split(':', 1)[1]}", retry_after)

    def add(self, client: str) -> None:
        self.total += 1
        self.by_client[client] += 1

    def remove(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """One unit for the duration of a `with` (e.g. a request streaming a body)."""
        self.check(client)
        self.add(client)
        try:
            yield
        finally:
            self.remove(client)
