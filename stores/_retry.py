"""Bound, retry and hedge storage requests, and translate their errors, in one place.

:class:`ResilientStore` wraps any zarr store. Every request has a timeout (reads
``read_timeout``; writes, deletes and whole listings ``write_timeout``); transient failures
(HTTP 408/429/500/502/503/504, timeouts, connection resets, truncated bodies) are retried with
jittered exponential backoff; a read still unanswered after ``hedge_after`` seconds (or after
the 95th percentile of recent read latencies, if longer, so that hedging adds at most ~5 % of
requests to a slow but healthy store) is sent a second time and the first answer wins; and no
operation spends more than ``give_up_after``
seconds over all its attempts: it then fails with :class:`StoreUnreachableError`, and so, at
once, do the store's other requests for the next ``give_up_after`` seconds (a circuit breaker:
a dead store ends a parallel ingest in seconds, not one timeout per region). Listings are
retried whole and directory deletes key by key. Errors retrying cannot fix become one-line
:mod:`parcelzarr.errors` (see :mod:`._errors`). It also counts requests and bytes, so a query
can report what it cost. Defaults come from ``PARCELZARR_*`` settings (:mod:`parcelzarr._config`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest, Store
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from parcelzarr import _config
from parcelzarr._concurrency import gather_bounded
from parcelzarr.errors import StoreUnreachableError

from ._errors import describe, is_transient, translate, unwrap
from ._quiesce import inflight

__all__ = ["IOCounters", "IOSnapshot", "ResilientStore", "RetryPolicy"]

logger = logging.getLogger(__name__)
T = TypeVar("T")



async def _hedged(
    call: Callable[[], Awaitable[T]], after: float, on_hedge: Callable[[], None] | None
) -> T:
    """``call()``, sent a second time if it has not answered after ``after`` seconds; the
    first success wins (the other request is cancelled), or the first error if both fail."""
    tasks = [asyncio.ensure_future(call())]
    try:
        done, _ = await asyncio.wait(tasks, timeout=after)
        if not done:
            if on_hedge is not None:
                on_hedge()
            tasks.append(asyncio.ensure_future(call()))
        pending = set(tasks)
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    return task.result()
                error = error or task.exception()
        assert error is not None
        raise error
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # mark retrieved: the loser's error is not news


@dataclass(frozen=True)
class RetryPolicy:
    """How storage requests are bounded, retried and hedged.

    ``attempts`` counts the first try (default ``PARCELZARR_RETRIES`` + 1); the wait before
    retry ``k`` is ``min(max_delay, base_delay * 2**k)`` scaled by a random factor in
    [0.5, 1]. Each attempt of a read may take ``read_timeout`` seconds, of a write, delete or
    whole listing ``write_timeout``; a read unanswered after ``hedge_after`` seconds (None:
    never; :class:`ResilientStore` waits for the 95th percentile of recent reads if longer)
    is sent a second time. Whatever happens, an operation gives up after
    ``give_up_after`` seconds with :class:`StoreUnreachableError`. Defaults come from the
    ``PARCELZARR_*`` settings (:mod:`parcelzarr._config`).
    """

    attempts: int = field(default_factory=lambda: _config.retries() + 1)
    base_delay: float = 0.1
    max_delay: float = 5.0
    read_timeout: float = field(default_factory=_config.read_timeout)
    write_timeout: float = field(default_factory=_config.write_timeout)
    give_up_after: float = field(default_factory=_config.unreachable_after)
    hedge_after: float | None = field(default_factory=_config.hedge_after)

    async def run(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        on_retry: Callable[[], None] | None = None,
        *,
        label: str = "store",
        write: bool = False,
        timeout: float | None = None,
        hedge_after: float | None = None,
        on_hedge: Callable[[], None] | None = None,
        tripped: Callable[[], str | None] | None = None,
    ) -> T:
        """Await ``call()`` within the timeouts, retrying transient failures (calling
        ``on_retry`` before each retry). With ``hedge_after`` (reads only: they are
        idempotent), an attempt unanswered after that many seconds is sent a second time.
        ``tripped`` is asked before each retry: a message means the store was declared
        unreachable meanwhile, and this call gives up at once with it.

        Raises
        ------
        StoreUnreachableError
            Transient failures (or no answer) until the attempts or ``give_up_after`` ran out.
        StoreAccessDeniedError, StoreWriteError, StoreIOError
            Storage errors retrying cannot fix (see :func:`._errors.translate`); other
            exceptions (missing keys, zarr's own) propagate unchanged.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        limit = timeout if timeout is not None else (
            self.write_timeout if write else self.read_timeout)
        last: BaseException | None = None
        reason = ""
        tries = 0
        for attempt in range(self.attempts):
            left = self.give_up_after - (loop.time() - start)
            if left <= 0:
                break
            bound = min(limit, left)
            tries += 1
            try:
                async with asyncio.timeout(bound):
                    if hedge_after is not None and hedge_after < bound:
                        return await _hedged(call, hedge_after, on_hedge)
                    return await call()
            except Exception as exc:
                if not is_transient(exc):
                    err = translate(exc, store=label, what=what, write=write)
                    if err is None:
                        raise
                    raise err from exc
                last = exc
                reason = (describe(unwrap(exc)) if str(exc)
                          else f"{type(exc).__name__}: no answer within {bound:.3g} s")
            if attempt + 1 >= self.attempts:
                break
            delay = min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1)
            if loop.time() - start + delay >= self.give_up_after:
                break
            if tripped is not None and (message := tripped()) is not None:
                raise StoreUnreachableError(message) from last
            # INFO: retries are routine (the query report counts them); the final failure is
            # the error the caller sees
            logger.info("transient storage error on %s of %s (%s), retry %d/%d in %.2fs",
                        what, label, reason, attempt + 1, self.attempts - 1, delay)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
        elapsed = loop.time() - start
        raise StoreUnreachableError(
            f"store {label} is unreachable or failing: {what} failed {tries} time(s) in "
            f"{elapsed:.1f} s (last error: {reason or 'none'}); check the network and the "
            "account endpoint, then retry"
        ) from last


@dataclass(frozen=True, slots=True)
class IOSnapshot:
    """The counts of :class:`IOCounters` at one moment; subtract two to get a difference."""

    get_requests: int = 0
    bytes_read: int = 0
    set_requests: int = 0
    bytes_written: int = 0
    retries: int = 0
    hedges: int = 0

    def __sub__(self, other: IOSnapshot) -> IOSnapshot:
        return IOSnapshot(
            get_requests=self.get_requests - other.get_requests,
            bytes_read=self.bytes_read - other.bytes_read,
            set_requests=self.set_requests - other.set_requests,
            bytes_written=self.bytes_written - other.bytes_written,
            retries=self.retries - other.retries,
            hedges=self.hedges - other.hedges,
        )


class IOCounters:
    """Thread-safe counts of store requests and bytes moved."""

    def __init__(self, *, track_keys: bool = False) -> None:
        self._lock = threading.Lock()
        self.track_keys = track_keys
        self.keys: list[str] = []
        self.reset()

    # Picklable (zarr stores must be: Dask ships them to workers); a copy gets its own lock.
    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Set every count to zero."""
        with self._lock:
            self.get_requests = 0
            self.bytes_read = 0
            self.set_requests = 0
            self.bytes_written = 0
            self.retries = 0
            self.hedges = 0
            self.keys = []

    def add_get(self, nbytes: int, key: str | None = None) -> None:
        with self._lock:
            self.get_requests += 1
            self.bytes_read += nbytes
            if self.track_keys and key is not None:
                self.keys.append(key)

    def add_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def add_hedge(self) -> None:
        with self._lock:
            self.hedges += 1

    def add_set(self, nbytes: int) -> None:
        with self._lock:
            self.set_requests += 1
            self.bytes_written += nbytes

    def snapshot(self) -> IOSnapshot:
        """The counts, read together under the lock."""
        with self._lock:
            return IOSnapshot(
                get_requests=self.get_requests,
                bytes_read=self.bytes_read,
                set_requests=self.set_requests,
                bytes_written=self.bytes_written,
                retries=self.retries,
                hedges=self.hedges,
            )


class _Latencies:
    """Recent read latencies and their 95th percentile (recomputed every 32 samples)."""

    def __init__(self, size: int = 256) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._added = 0
        self.p95 = 0.0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._added += 1
        if self._added % 32 == 0:
            ordered = sorted(self._samples)
            self.p95 = ordered[int(0.95 * (len(ordered) - 1))]


class ResilientStore(WrapperStore[Store]):
    """A zarr store wrapper that bounds, retries and hedges requests, translates storage
    errors and counts I/O (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        policy: RetryPolicy | None = None,
        counters: IOCounters | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(store)
        self.policy = policy or RetryPolicy()
        self.counters = counters or IOCounters()
        self.label = label or "store"
        self._latencies = _Latencies()
        self._trip: tuple[float, str] | None = None  # when and why the store was given up

    @property
    def inner(self) -> Store:
        """The wrapped store (whose requests this one retries and counts)."""
        return self._store

    def _with_store(self, store: Store) -> ResilientStore:
        return type(self)(store, policy=self.policy, counters=self.counters, label=self.label)

    def __repr__(self) -> str:
        return f"ResilientStore({self.label})"

    __str__ = __repr__

    def _tripped(self) -> str | None:
        """Why the store was given up, while the breaker is open (``give_up_after`` s)."""
        if self._trip is None or time.monotonic() - self._trip[0] > self.policy.give_up_after:
            return None
        return self._trip[1]

    async def _run(self, what: str, call: Callable[[], Awaitable[T]], *, write: bool = False,
                   hedge: bool = False, timeout: float | None = None) -> T:
        if (message := self._tripped()) is not None:
            raise StoreUnreachableError(message)
        floor = self.policy.hedge_after
        try:
            with inflight():  # the process waits for it at exit (see ._quiesce)
                return await self.policy.run(
                    what, call, self.counters.add_retry, label=self.label, write=write,
                    timeout=timeout, on_hedge=self.counters.add_hedge, tripped=self._tripped,
                    hedge_after=max(floor, self._latencies.p95) if hedge and floor else None,
                )
        except StoreUnreachableError as exc:
            if self._tripped() is None:
                self._trip = (time.monotonic(), str(exc))
            raise

    async def _read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A hedged read; its latency sets later hedging delays."""
        start = time.monotonic()
        result = await self._run(what, call, hedge=True)
        self._latencies.add(time.monotonic() - start)
        return result

    async def _open(self) -> None:
        await self._run("opening the store", self._store._open, write=not self.read_only)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        result = await self._read(key, lambda: self._store.get(key, prototype, byte_range))
        self.counters.add_get(0 if result is None else len(result), key)
        return result

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        result = await self._read(
            "partial values", lambda: self._store.get_partial_values(prototype, key_ranges))
        for (key, _), item in zip(key_ranges, result, strict=True):
            self.counters.add_get(0 if item is None else len(item), key)
        return result

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return await self._read(key, lambda: self._store.exists(key))

    async def getsize(self, key: str) -> int:
        return await self._read(key, lambda: self._store.getsize(key))

    async def is_empty(self, prefix: str) -> bool:
        return await self._run(f"listing {prefix or '/'}", lambda: self._store.is_empty(prefix))

    async def set(self, key: str, value: Buffer) -> None:
        await self._run(key, lambda: self._store.set(key, value), write=True)
        self.counters.add_set(len(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._run(key, lambda: self._store.set_if_not_exists(key, value), write=True)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        await gather_bounded([partial(self.set, key, value) for key, value in values])

    async def delete(self, key: str) -> None:
        await self._run(key, lambda: self._store.delete(key), write=True)

    async def clear(self) -> None:
        await self._run("clearing the store", self._store.clear, write=True)

    def list(self) -> AsyncIterator[str]:
        return self._listed("listing /", self._store.list)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(f"listing {prefix or '/'}", lambda: self._store.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listed(f"listing {prefix or '/'}", lambda: self._store.list_dir(prefix))

    async def _listed(self, what: str, listing: Callable[[], AsyncIterator[str]]
                      ) -> AsyncIterator[str]:
        """A listing, retried whole (all pages, within the write timeout) then yielded, so a
        retry never yields a key twice."""

        async def collect() -> list[str]:
            return [key async for key in listing()]

        for key in await self._run(what, collect, timeout=self.policy.write_timeout):
            yield key

    async def delete_dir(self, prefix: str) -> None:
        if isinstance(self._store, (LocalStore, MemoryStore)):  # one local call, no requests
            await self._run(f"{prefix}/", lambda: self._store.delete_dir(prefix), write=True)
            return
        self._check_writable()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        keys = [key async for key in self.list_prefix(prefix)]
        await gather_bounded([partial(self.delete, key) for key in keys])

    def __getattr__(self, name: str) -> Any:  # e.g. FsspecStore.fs, LocalStore.root
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)
