"""``parcelzarr._zarr_compat``: each shim over zarr internals, tested directly against zarr's
public API; and no other module reaches into zarr's internals."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.buffer import Buffer
from zarr.storage import MemoryStore

from parcelzarr._zarr_compat import (
    ArrayV3Metadata,
    ConsolidatedMetadata,
    GroupMetadata,
    nest_consolidated,
    sync,
    zarr_loop,
    zarr_loop_if_running,
)

ROOT = Path(__file__).resolve().parents[1]

#: zarr internals: private modules (``zarr.core``, ``zarr.storage._*``, ``zarr._*``) and the
#: private attributes the commit and the engine once used directly.
PRIVATE = re.compile(
    r"\bzarr\.core\b|\bzarr\.storage\._|\bzarr\._(?!_)|\bfrom zarr\.core\b|\bmake_store_path\b"
    r"|\._flat_to_nested\b|\._save_metadata\b|\._async_array\b|\b_get_loop\b|\bzsync\b"
)


def test_sync_runs_on_zarrs_loop_thread() -> None:
    caller = threading.get_ident()

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0)
        return threading.get_ident(), asyncio.get_running_loop()

    thread, loop = sync(where())
    assert thread != caller
    assert loop is zarr_loop()
    assert zarr_loop_if_running() is loop
    assert loop.is_running()


def test_sync_timeout_raises() -> None:
    with pytest.raises(TimeoutError):
        sync(asyncio.sleep(5), timeout=0.05)


def test_zarr_loop_serves_zarrs_own_io() -> None:
    """zarr's synchronous API runs on the same loop (clients bound to it work there)."""
    seen: list[asyncio.AbstractEventLoop] = []

    class Spy(MemoryStore):
        async def set(self, key: str, value: Buffer) -> None:
            seen.append(asyncio.get_running_loop())
            await super().set(key, value)

    zarr.open_group(Spy(), mode="w", zarr_format=3)
    assert seen
    assert all(loop is zarr_loop() for loop in seen)


def test_metadata_classes_are_zarrs() -> None:
    group = zarr.open_group(MemoryStore(), mode="w", zarr_format=3)
    arr = group.create_array("a", shape=(4,), dtype="uint16")
    assert isinstance(group.metadata, GroupMetadata)
    assert isinstance(arr.metadata, ArrayV3Metadata)
    zarr.consolidate_metadata(group.store)
    reopened = zarr.open_group(group.store, mode="r", zarr_format=3)
    assert isinstance(reopened.metadata.consolidated_metadata, ConsolidatedMetadata)


def test_nest_consolidated_matches_zarrs_consolidation() -> None:
    """Flat ``{"a/b/c": meta}`` nested in place equals what ``zarr.consolidate_metadata``
    stores for the same hierarchy (the oracle: zarr's public consolidation)."""
    store = MemoryStore()
    root = zarr.open_group(store, mode="w", zarr_format=3)
    grid = root.create_group("utm16n").create_group("10m")
    grid.create_array("B04", shape=(2, 8, 8), chunks=(1, 4, 4), dtype="uint16")
    grid.create_array("time", shape=(2,), dtype="int64")
    root.create_group("utm17n").create_array("x", shape=(3,), dtype="float64")
    zarr.consolidate_metadata(store)
    expected = zarr.open_group(store, mode="r", zarr_format=3).metadata.consolidated_metadata
    assert expected is not None

    flat = {}
    for path, node in zarr.open_group(store, mode="r", use_consolidated=False).members(
            max_depth=None):
        meta = node.metadata
        if isinstance(meta, GroupMetadata):
            meta = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata({}))
        flat[path] = meta
    nest_consolidated(flat)
    assert set(flat) == {"utm16n", "utm17n"}
    assert ConsolidatedMetadata(flat).to_dict() == expected.to_dict()
    inner = flat["utm16n"].consolidated_metadata
    assert set(inner.metadata) == {"10m"}
    assert set(inner.metadata["10m"].consolidated_metadata.metadata) == {"B04", "time"}
    assert np.dtype(inner.metadata["10m"].consolidated_metadata.metadata["B04"]
                    .data_type.to_native_dtype()) == np.uint16


def test_zarr_internals_are_used_only_in_the_compat_module() -> None:
    """Private zarr names appear in ``src/parcelzarr/_zarr_compat.py`` and nowhere else in the
    package, the benchmark or the tests (this file, which lists them, excepted)."""
    here = Path(__file__).resolve()
    compat = ROOT / "src" / "parcelzarr" / "_zarr_compat.py"
    assert PRIVATE.search(compat.read_text())
    offenders = []
    for folder in ("src", "ingest", "query", "stores", "bench", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in (here, compat):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
