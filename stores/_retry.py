"""Retry transient storage errors with exponential backoff, in one place.

:class:`ResilientStore` wraps any zarr store: reads and writes that fail with a transient error
(HTTP 408/429/500/502/503/504, timeouts, connection resets) are retried with jittered
exponential backoff; other errors propagate unchanged. It also counts requests and bytes, so a
query can report what it cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from ._azure import redact

__all__ = ["IOCounters", "ResilientStore", "RetryPolicy", "is_transient"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_OBSTORE_TRANSIENT = re.compile(
    r"\b(408|429|500|502|503|504)\b|error sending request|connection (?:reset|closed|refused)"
    r"|timed out|timeout|incomplete|broken pipe|server busy",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage error worth retrying."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    name = type(exc).__name__
    if name == "GenericError" and type(exc).__module__.startswith("obstore"):
        # obstore reports HTTP and connection failures as GenericError with the cause in text
        text = str(exc).split("Debug source", 1)[0]
        return bool(_OBSTORE_TRANSIENT.search(text))
    # azure-core and aiohttp transport errors, matched by name so neither is a hard import.
    return name in {
        "ServiceRequestError",
        "ServiceResponseError",
        "ServiceRequestTimeoutError",
        "ServiceResponseTimeoutError",
        "ClientConnectionError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "IncompleteReadError",
    }


@dataclass(frozen=True)
class RetryPolicy:
    """How transient errors are retried.

    ``attempts`` counts the first try; the wait before retry ``k`` is
    ``min(max_delay, base_delay * 2**k)`` scaled by a random factor in [0.5, 1].
    """

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0

    async def run(self, what: str, call: Callable[[], Awaitable[T]],
                  on_retry: Callable[[], None] | None = None) -> T:
        """Await ``call()``, retrying transient failures (calling ``on_retry`` before each)."""
        for attempt in range(self.attempts):
            try:
                return await call()
            except Exception as exc:
                if attempt + 1 >= self.attempts or not is_transient(exc):
                    raise
                delay = min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1)
                logger.warning(
                    "transient storage error on %s (%s), retry %d/%d in %.2fs",
                    what, redact(f"{type(exc).__name__}: {exc}")[:200], attempt + 1,
                    self.attempts - 1, delay,
                )
                if on_retry is not None:
                    on_retry()
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


class IOCounters:
    """Thread-safe counts of store requests and bytes moved."""

    def __init__(self, *, track_keys: bool = False) -> None:
        self._lock = threading.Lock()
        self.track_keys = track_keys
        self.keys: list[str] = []
        self.reset()

    def reset(self) -> None:
        """Set every count to zero."""
        with self._lock:
            self.get_requests = 0
            self.bytes_read = 0
            self.set_requests = 0
            self.bytes_written = 0
            self.retries = 0
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

    def add_set(self, nbytes: int) -> None:
        with self._lock:
            self.set_requests += 1
            self.bytes_written += nbytes

    def snapshot(self) -> dict[str, int]:
        """The counts as a plain dict."""
        with self._lock:
            return {
                "get_requests": self.get_requests,
                "bytes_read": self.bytes_read,
                "set_requests": self.set_requests,
                "bytes_written": self.bytes_written,
                "retries": self.retries,
            }


class ResilientStore(WrapperStore[Store]):
    """A zarr store wrapper that retries transient errors and counts I/O."""

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

    def _with_store(self, store: Store) -> ResilientStore:
        return type(self)(store, policy=self.policy, counters=self.counters, label=self.label)

    def __repr__(self) -> str:
        return f"ResilientStore({self.label})"

    __str__ = __repr__

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        result = await self.policy.run(
            key, lambda: self._store.get(key, prototype, byte_range), self.counters.add_retry
        )
        self.counters.add_get(0 if result is None else len(result), key)
        return result

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        result = await self.policy.run(
            "partial values", lambda: self._store.get_partial_values(prototype, key_ranges),
            self.counters.add_retry,
        )
        for (key, _), item in zip(key_ranges, result, strict=True):
            self.counters.add_get(0 if item is None else len(item), key)
        return result

    async def exists(self, key: str) -> bool:
        return await self.policy.run(key, lambda: self._store.exists(key))

    async def set(self, key: str, value: Buffer) -> None:
        await self.policy.run(key, lambda: self._store.set(key, value))
        self.counters.add_set(len(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self.policy.run(key, lambda: self._store.set_if_not_exists(key, value))

    async def delete(self, key: str) -> None:
        await self.policy.run(key, lambda: self._store.delete(key))

    async def getsize(self, key: str) -> int:
        return await self.policy.run(key, lambda: self._store.getsize(key))

    def __getattr__(self, name: str) -> Any:  # e.g. FsspecStore.fs, LocalStore.root
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)
