"""Decoded-chunk cache for :meth:`ParcelStore.read`: neighbouring parcels share chunks.

A loop of ``read`` calls over parcels in spatial order touches the same chunks again and
again; without a cache each call refetches and decodes them. :class:`ChunkCache` keeps decoded
chunks (least recently used first out, bounded by bytes) keyed by grid, band and chunk indices
(time block, row, column). :func:`read_window` serves a window from it: chunks it lacks are
fetched on exact chunk regions, all of them concurrently in one round trip, then the window is
copied out of the chunks, so values are the stored values bit for bit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
from cachetools import LRUCache
from zarr import AsyncArray

from parcelzarr._concurrency import gather_bounded
from parcelzarr._grid import Tiles

__all__ = ["ChunkCache", "ChunkKey", "read_window"]

logger = logging.getLogger(__name__)

#: (grid, band, time block, chunk row, chunk column)
ChunkKey = tuple[str, str, int, int, int]


class ChunkCache:
    """A least-recently-used cache of decoded chunks bounded by their bytes.

    Parameters
    ----------
    max_bytes:
        Upper bound of the decoded bytes held (0 disables caching). A chunk larger than the
        bound is never kept.

    Notes
    -----
    Cached arrays are read-only. Safe to share between threads.
    """

    def __init__(self, *, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        #: Chunk lookups served from the cache, and those that had to be fetched.
        self.hits = 0
        self.misses = 0
        self._blocks: LRUCache[ChunkKey, np.ndarray] = LRUCache(
            maxsize=max(1, self.max_bytes), getsizeof=_nbytes)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Decoded bytes held."""
        return int(self._blocks.currsize)

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: object) -> bool:
        return key in self._blocks

    def __repr__(self) -> str:
        return (f"ChunkCache({len(self)} chunks, {self.nbytes / 1e6:.1f} of "
                f"{self.max_bytes / 1e6:.1f} MB, {self.hits} hits, {self.misses} misses)")

    def get(self, key: ChunkKey) -> np.ndarray | None:
        """The cached chunk (now most recently used), or None; counts a hit or a miss."""
        with self._lock:
            block = self._blocks.get(key)  # marks it most recently used
            if block is None:
                self.misses += 1
                return None
            self.hits += 1
            return block

    def put(self, key: ChunkKey, block: np.ndarray) -> None:
        """Keep ``block`` (made read-only), evicting least recently used chunks to fit."""
        size = int(block.nbytes)
        if size > self.max_bytes:
            return
        block.setflags(write=False)
        with self._lock:
            self._blocks[key] = block  # evicts least recently used chunks to fit

    def keys(self) -> list[ChunkKey]:
        """The keys held."""
        with self._lock:
            return list(self._blocks)

    def clear(self) -> None:
        """Drop every chunk (the hit and miss counts are kept)."""
        with self._lock:
            self._blocks.clear()


def _nbytes(block: np.ndarray) -> int:
    return int(block.nbytes)


def _tiles(arr: AsyncArray[Any]) -> Tiles:
    return Tiles((arr.shape[1], arr.shape[2]), (arr.chunks[1], arr.chunks[2]))


def _chunk_region(arr: AsyncArray[Any], tb: int, cy: int, cx: int) -> tuple[slice, ...]:
    """The exact region of chunk ``(tb, cy, cx)``, clipped to the array's shape."""
    ct = arr.chunks[0]
    y0, y1, x0, x1 = _tiles(arr).chunk_window(cy, cx)
    return (slice(tb * ct, min(arr.shape[0], (tb + 1) * ct)), slice(y0, y1), slice(x0, x1))


async def read_window(
    arrays: Mapping[str, AsyncArray[Any]],
    *,
    grid: str,
    times: np.ndarray,
    window: tuple[int, int, int, int],
    cache: ChunkCache,
    concurrency: int,
) -> dict[str, np.ndarray]:
    """Read the ``(time, y, x)`` window of each band through ``cache``.

    Parameters
    ----------
    arrays:
        Band name to its ``(time, y, x)`` array of grid ``grid``.
    grid:
        Grid name (part of the cache key).
    times:
        Time indices to read, in output order.
    window:
        ``(row0, row1, col0, col1)``, within the arrays' shape.
    cache:
        Decoded chunks; the chunks fetched are added to it.
    concurrency:
        Chunk requests in flight at most.

    Returns
    -------
    dict
        Band name to an array of shape ``(len(times), row1 - row0, col1 - col0)``.
    """
    r0, r1, c0, c1 = window
    times = np.asarray(times, dtype=np.int64)
    plan: dict[str, tuple[range, range, list[tuple[int, np.ndarray, np.ndarray]]]] = {}
    have: dict[ChunkKey, np.ndarray] = {}
    missing: list[ChunkKey] = []
    for band, arr in arrays.items():
        ct = arr.chunks[0]
        rows, cols = _tiles(arr).chunk_span(window)
        blocks = []
        for tb in np.unique(times // ct):
            pos = np.flatnonzero(times // ct == tb)
            blocks.append((int(tb), pos, times[pos] - int(tb) * ct))
        plan[band] = (rows, cols, blocks)
        for tb, _, _ in blocks:
            for cy in rows:
                for cx in cols:
                    key = (grid, band, tb, cy, cx)
                    got = cache.get(key)
                    if got is None:
                        missing.append(key)
                    else:
                        have[key] = got

    async def fetch(key: ChunkKey) -> np.ndarray:
        arr = arrays[key[1]]
        return np.asarray(await arr.getitem(_chunk_region(arr, *key[2:])))

    if missing:
        fetched = await gather_bounded([partial(fetch, k) for k in missing],
                                       limit=max(1, concurrency))
        for key, block in zip(missing, fetched, strict=True):
            have[key] = block
            cache.put(key, block)
        logger.debug("read_window: %d chunks cached, %d fetched", len(have) - len(missing),
                     len(missing))

    out: dict[str, np.ndarray] = {}
    for band, arr in arrays.items():
        tiles = _tiles(arr)
        rows, cols, blocks = plan[band]
        first = have[(grid, band, blocks[0][0], rows[0], cols[0])]
        result = np.empty((times.size, r1 - r0, c1 - c0), dtype=first.dtype)
        for tb, pos, local in blocks:
            for cy in rows:
                for cx in cols:
                    ya, yb, xa, xb = tiles.overlap(window, cy, cx)
                    by, bx = tiles.chunk_window(cy, cx)[::2]
                    block = have[(grid, band, tb, cy, cx)]
                    result[pos, ya - r0:yb - r0, xa - c0:xb - c0] = block[
                        local, ya - by:yb - by, xa - bx:xb - bx]
        out[band] = result
    return out

