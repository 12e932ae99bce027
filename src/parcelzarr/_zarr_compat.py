"""The one module that touches zarr-python internals.

The crash-safe commit rewrites consolidated metadata itself, and all I/O runs on zarr's
event loop; both need parts of zarr that are not its public API (``zarr.core.*``, private
attributes). They are all named here, each behind a small function with a direct test
(``tests/test_zarr_compat.py``), so a zarr upgrade breaks in one place, visibly.
``pyproject.toml`` bounds zarr below the first release not verified; ``make
test-newest-zarr`` runs the suite against the newest zarr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

from zarr.core import sync as _zsync
from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata

__all__ = [
    "ArrayV3Metadata",
    "AsyncGroup",
    "ConsolidatedMetadata",
    "GroupMetadata",
    "nest_consolidated",
    "sync",
    "zarr_loop",
    "zarr_loop_if_running",
]

T = TypeVar("T")


def sync(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on zarr's I/O loop (its background thread) and return its result."""
    return _zsync.sync(coro, timeout=timeout)


def zarr_loop() -> asyncio.AbstractEventLoop:
    """zarr's I/O event loop (started on first use); async clients must be bound to it."""
    return _zsync._get_loop()


def zarr_loop_if_running() -> asyncio.AbstractEventLoop | None:
    """zarr's I/O loop if it was started and still runs (at exit: to end pending requests)."""
    loop = _zsync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


def nest_consolidated(members: MutableMapping[str, Any]) -> None:
    """Turn flat consolidated metadata (``{"a/b/c": meta}``) into zarr's nested in-memory form,
    in place: each group's metadata holds only its immediate children."""
    ConsolidatedMetadata._flat_to_nested(members)  # type: ignore[arg-type]
