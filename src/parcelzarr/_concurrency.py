"""Bounded concurrent I/O, in one place: await many storage calls with a limit in flight.

Every fan-out of storage requests (chunk reads, relayout copies, deletes, batched writes)
goes through :func:`gather_bounded`, so one setting, ``PARCELZARR_CONCURRENCY``, bounds them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from . import _config

__all__ = ["gather_bounded"]

T = TypeVar("T")


async def gather_bounded(calls: Iterable[Callable[[], Awaitable[T]]], *,
                         limit: int | None = None) -> list[T]:
    """Await ``call()`` for every call, at most ``limit`` at a time (default
    ``PARCELZARR_CONCURRENCY``, 64), and return the results in the order of ``calls``.

    The first exception propagates (as with :func:`asyncio.gather`).

    >>> async def double(x: int) -> int:
    ...     return 2 * x
    >>> asyncio.run(gather_bounded([lambda: double(1), lambda: double(2)], limit=1))
    [2, 4]
    """
    n = _config.default_concurrency() if limit is None else limit
    if n < 1:
        raise ValueError(f"concurrency limit must be at least 1, got {n}")
    sem = asyncio.Semaphore(n)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))
