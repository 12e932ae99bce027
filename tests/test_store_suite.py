"""``ResilientStore`` through zarr's own store test suite (``zarr.testing.store.StoreTests``):
the wrapper that bounds, retries and counts requests must keep every behaviour of the zarr
``Store`` it wraps, on a local directory and in memory.

The suite reads and writes behind the store's back (``get``/``set`` below) to check it: the
local directory's files and the memory store's dict are the oracle, not the wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from parcelzarr.stores import ResilientStore
from zarr.buffer.cpu import Buffer
from zarr.storage import LocalStore, MemoryStore
from zarr.testing.store import StoreTests


class _ResilientSuite(StoreTests[ResilientStore, Buffer]):
    store_cls = ResilientStore
    buffer_cls = Buffer

    def test_store_supports_writes(self, store: ResilientStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: ResilientStore) -> None:
        assert store.supports_listing

    def test_store_supports_partial_writes(self, store: ResilientStore) -> None:
        assert store.supports_partial_writes == store._store.supports_partial_writes

    def test_store_repr(self, store: ResilientStore) -> None:
        assert repr(store) == "ResilientStore(store)"

    def test_counts_what_it_moves(self, store: ResilientStore) -> None:
        """Not in zarr's suite: the wrapper's own job, counting bytes in and out."""
        from zarr.buffer import default_buffer_prototype

        from parcelzarr._zarr_compat import sync

        before = store.counters.snapshot()
        sync(store.set("a/b", self.buffer_cls.from_bytes(b"12345")))
        got = sync(store.get("a/b", prototype=default_buffer_prototype()))
        assert got is not None and got.to_bytes() == b"12345"
        after = store.counters.snapshot()
        assert after != before


class TestResilientLocalStore(_ResilientSuite):
    async def get(self, store: ResilientStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((Path(store._store.root) / key).read_bytes())

    async def set(self, store: ResilientStore, key: str, value: Buffer) -> None:
        path = Path(store._store.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"store": LocalStore(str(tmp_path))}

    @pytest.fixture
    def open_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"store_cls": LocalStore, "root": str(tmp_path)}


class TestResilientMemoryStore(_ResilientSuite):
    async def get(self, store: ResilientStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes(store._store._store_dict[key].to_bytes())

    async def set(self, store: ResilientStore, key: str, value: Buffer) -> None:
        store._store._store_dict[key] = value

    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"store": MemoryStore(store_dict={})}

    @pytest.fixture
    def open_kwargs(self, store_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"store_cls": MemoryStore, "store_dict": store_kwargs["store"]._store_dict}
