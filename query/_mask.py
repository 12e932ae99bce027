"""The cloud mask of a query: a classification band (SCL) read per mask chunk, once each,
through a small cache walked in spatial order, and upsampled by nearest neighbour onto the
band's chunks. A weighting raster (:mod:`._weights`) is read the same way."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr import AsyncArray

__all__ = ["MaskCache", "MaskSource"]


@dataclass(frozen=True)
class MaskSource:
    """A classification band (SCL) masking the grid's pixels, possibly on a coarser grid
    (or, with no ``classes``, any layer read onto them: a weighting raster).

    Band pixel ``(r, c)`` reads mask pixel ``((r + offset[0]) // factor, (c + offset[1]) //
    factor)``; ``time_map[t]`` is the mask's time index for band time ``t`` (-1: no mask that
    date). Pixels whose class is in ``classes`` are excluded and counted as ``nodata``.
    """

    array: AsyncArray[Any]
    factor: int
    offset: tuple[int, int]
    time_map: np.ndarray
    classes: np.ndarray


class MaskCache:
    """Mask (SCL) chunks read once each, kept in a small cache walked in spatial order."""

    def __init__(self, src: MaskSource, sem: asyncio.Semaphore, capacity: int) -> None:
        self.src = src
        self.sem = sem
        self.capacity = capacity
        self.blocks: OrderedDict[tuple[int, int, int], asyncio.Future[np.ndarray]] = (
            OrderedDict())

    def _block(self, tc: int, cy: int, cx: int) -> asyncio.Future[np.ndarray]:
        key = (tc, cy, cx)
        fut = self.blocks.get(key)
        if fut is not None:
            self.blocks.move_to_end(key)
            return fut
        arr = self.src.array
        ct, ch, cw = arr.chunks
        sel = (slice(tc * ct, min(arr.shape[0], (tc + 1) * ct)),
               slice(cy * ch, min(arr.shape[1], (cy + 1) * ch)),
               slice(cx * cw, min(arr.shape[2], (cx + 1) * cw)))

        async def get() -> np.ndarray:
            async with self.sem:
                return np.asarray(await arr.getitem(sel))

        fut = asyncio.ensure_future(get())
        self.blocks[key] = fut
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return fut

    async def layer(self, win: tuple[int, int, int, int], times: Sequence[int]
                    ) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """The layer's pixels over the band window ``win`` for band time indices ``times``.

        Returns, per band time index with a layer date, the layer's values on the layer
        pixels covering the window (zero beyond the layer's extent), which of those pixels
        the layer covers, and the rows ``ys`` and columns ``xs`` of that block holding each
        band pixel (``block[np.ix_(ys, xs)]`` upsamples by nearest neighbour).
        """
        src = self.src
        arr = src.array
        f = src.factor
        r0, r1, c0, c1 = win
        oy, ox = src.offset
        # layer pixels covering the window
        mr0, mr1 = (r0 + oy) // f, (r1 - 1 + oy) // f + 1
        mc0, mc1 = (c0 + ox) // f, (c1 - 1 + ox) // f + 1
        ys = (np.arange(r0, r1) + oy) // f - mr0
        xs = (np.arange(c0, c1) + ox) // f - mc0
        ct, ch, cw = arr.chunks
        out: dict[int, np.ndarray] = {}
        wanted = [(t, int(src.time_map[t])) for t in times if src.time_map[t] >= 0]
        # clip to the layer's coverage: band pixels beyond it have no layer value
        cr0, cr1 = max(mr0, 0), min(mr1, arr.shape[1])
        cc0, cc1 = max(mc0, 0), min(mc1, arr.shape[2])
        inside = np.zeros((mr1 - mr0, mc1 - mc0), dtype=bool)
        if not wanted or cr1 <= cr0 or cc1 <= cc0:
            return out, inside, ys, xs
        inside[cr0 - mr0:cr1 - mr0, cc0 - mc0:cc1 - mc0] = True
        tcs = sorted({mt // ct for _, mt in wanted})
        rows = range(cr0 // ch, (cr1 - 1) // ch + 1)
        cols = range(cc0 // cw, (cc1 - 1) // cw + 1)
        keys = [(tc, cy, cx) for tc in tcs for cy in rows for cx in cols]
        blocks = dict(zip(keys, await asyncio.gather(*(self._block(*k) for k in keys)),
                          strict=True))
        done: dict[int, np.ndarray] = {}
        for t, mt in wanted:
            if mt in done:  # a layer date serving several band dates (static weights)
                out[t] = done[mt]
                continue
            tc = mt // ct
            vals = np.zeros((mr1 - mr0, mc1 - mc0), dtype=arr.dtype)
            for cy in rows:
                for cx in cols:
                    b = blocks[(tc, cy, cx)][mt - tc * ct]
                    y0, x0 = cy * ch, cx * cw
                    ya, yb = max(cr0, y0), min(cr1, y0 + b.shape[0])
                    xa, xb = max(cc0, x0), min(cc1, x0 + b.shape[1])
                    vals[ya - mr0:yb - mr0, xa - mc0:xb - mc0] = b[ya - y0:yb - y0,
                                                                   xa - x0:xb - x0]
            out[t] = done[mt] = vals
        return out, inside, ys, xs

    async def window(self, win: tuple[int, int, int, int], times: Sequence[int]
                     ) -> dict[int, np.ndarray]:
        """Boolean 'masked' arrays of the band window ``win`` for band time indices ``times``
        (band pixels beyond the mask's extent are kept)."""
        values, inside, ys, xs = await self.layer(win, times)
        return {t: (np.isin(v, self.src.classes) & inside)[np.ix_(ys, xs)]
                for t, v in values.items()}
