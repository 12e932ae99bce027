"""Deterministic crashes: a store that "dies" at its n-th write boundary.

Every mutating store operation (``set``, ``set_if_not_exists``, ``delete``; ``delete_dir`` and
``_set_many`` count each key) is a *write boundary*. :class:`CrashingStore` numbers them
and raises :class:`SimulatedCrash` at boundary ``crash_at``: that operation and everything
after it is not done, everything before it is, which is what a ``kill -9`` between two
requests leaves behind. :class:`SimulatedCrash` is a ``BaseException``, so ``except
Exception`` clean-up paths do not run (a killed process runs none either); once crashed, the
store refuses every further operation, reads included.

A dry run (``crash_at=None``) counts the boundaries of an operation, so a test can crash it
at each of them in turn::

    plan = FaultPlan()
    with crashing_stores(plan):
        pz.ingest(...)                       # plan.count boundaries
    for n in range(1, plan.count + 1):
        with crashing_stores(FaultPlan(crash_at=n)), pytest.raises(SimulatedCrash):
            pz.ingest(...)
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest, Store
from zarr.storage import WrapperStore

__all__ = ["CrashingStore", "FaultPlan", "SimulatedCrash", "crashing_stores"]


class SimulatedCrash(BaseException):
    """The process "died" at a write boundary (raised instead of doing the operation)."""


@dataclass
class FaultPlan:
    """Where to crash, and what happened: boundaries counted and the operations done."""

    crash_at: int | None = None
    count: int = 0
    crashed: bool = False
    log: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def boundary(self, op: str, key: str) -> None:
        """Count one write boundary; raise :class:`SimulatedCrash` if it is the planned one."""
        with self._lock:
            if self.crashed:
                raise SimulatedCrash(f"store is dead (crashed at boundary {self.crash_at})")
            self.count += 1
            if self.crash_at is not None and self.count >= self.crash_at:
                self.crashed = True
                raise SimulatedCrash(f"crash at write boundary {self.count}: {op} {key}")
            self.log.append(f"{op} {key}")

    def check_alive(self) -> None:
        if self.crashed:
            raise SimulatedCrash(f"store is dead (crashed at boundary {self.crash_at})")


class CrashingStore(WrapperStore[Store]):
    """A zarr store wrapper that crashes at the write boundary its :class:`FaultPlan` names."""

    def __init__(self, store: Store, plan: FaultPlan) -> None:
        super().__init__(store)
        self.plan = plan

    def _with_store(self, store: Store) -> CrashingStore:
        return type(self)(store, self.plan)

    def __repr__(self) -> str:
        return f"CrashingStore({self._store!r}, crash_at={self.plan.crash_at})"

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self.plan.check_alive()
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        self.plan.check_alive()
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        self.plan.boundary("set", key)
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self.plan.boundary("set_if_not_exists", key)
        await self._store.set_if_not_exists(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self.plan.boundary("delete", key)
        await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        prefix = prefix.rstrip("/")
        keys = [k async for k in self._store.list_prefix(f"{prefix}/" if prefix else "")]
        for key in keys:
            await self.delete(key)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self.plan.check_alive()
        return self._store.list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self.plan.check_alive()
        return self._store.list_dir(prefix)

    def __getattr__(self, name: str) -> Any:  # e.g. FsspecStore.fs, LocalStore.root
        if name == "_store":
            raise AttributeError(name)
        return getattr(self._store, name)


@contextmanager
def crashing_stores(plan: FaultPlan) -> Iterator[FaultPlan]:
    """Within the block, every store opened for writing by parcelzarr crashes per ``plan``."""
    from parcelzarr.stores import _open

    original = _open._raw_store

    def raw(location: Any, storage_options: Any, *, read_only: bool) -> Store:
        store = original(location, storage_options, read_only=read_only)
        return store if read_only else CrashingStore(store, plan)

    _open._raw_store = raw
    try:
        yield plan
    finally:
        _open._raw_store = original
