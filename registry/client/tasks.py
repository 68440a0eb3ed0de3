"""Running transfers side by side, and the sync face the CLI calls."""
from __future__ import annotations

import asyncio
from typing import Coroutine, Iterable, TypeVar

T = TypeVar("T")


async def run_all(coros: Iterable[Coroutine[object, object, T]], jobs: int) -> list[T]:
    """Run at most `jobs` at once; the first failure cancels the rest and is
    raised as itself (not wrapped in an ExceptionGroup)."""
    sem = asyncio.Semaphore(max(1, jobs))

    async def one(c: Coroutine[object, object, T]) -> T:
        try:
            async with sem:
                return await c
        finally:
            c.close()  # a no-op once it ran; quiets one cancelled before it started

    pending = list(coros)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(c)) for c in pending]
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    return [t.result() for t in tasks]


def _first(eg: BaseExceptionGroup) -> BaseException:
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first(e)
        if not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]


def run_sync(coro: Coroutine[object, object, T]) -> T:
    """asyncio.run for the CLI, which is synchronous."""
    return asyncio.run(coro)
