"""The batch engine: fetch each needed chunk once, concurrently, and reduce per parcel.

One coroutine per grid runs on zarr's event loop: a sliding window of chunk fetches (bounded
requests in flight) in spatial order, while the CPU work of each fetched chunk (rasterising the
parcels that touch it, then vectorised reductions) runs in a worker thread. Per-parcel partials
are kept for all parcels (O(parcels) memory); pixel values for exact medians and percentiles
are kept only until a parcel's last chunk has been read.

Reads go per zarr chunk: for each spatial chunk and band, the dates asked for are grouped by
the array's time chunking and each time block is read once, then sliced per date; a season on
a time-compacted layout (chunks ``(T, cy, cx)``) costs one request per spatial chunk and band.
A cloud mask (SCL) from a coarser grid of the same CRS is read per SCL chunk through a small
cache in spatial order and upsampled by nearest neighbour onto the band chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr import AsyncArray

from parcelzarr._footprint import covered_mask, valid_mask, window_covered
from parcelzarr.errors import QueryDeadlineError

from ._composite import composite_values
from ._plan import ChunkPlan
from ._rasterize import ChunkLabels, clip_to_grid, label_chunk, outside_pixels
from ._stats import Partials, StatSpec, exact_stats

__all__ = ["GridJob", "Layer", "MaskSource", "run_grid"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]
#: One layer of one chunk: valid parcels, values, weights; nodata parcels, weights; the
#: ground area of each valid pixel (categorical layers only, else None).
Prepared = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None,
                 np.ndarray | None]


@dataclass(frozen=True)
class Layer:
    """One output layer: a band (or derived index) at one time index of the grid, or a
    pixel-wise ``composite`` of its values at the time indices ``times`` (labelled
    ``label``; see :mod:`._composite`)."""

    name: str
    time_index: int
    inputs: tuple[str, ...]
    formula: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None
    times: tuple[int, ...] = ()
    composite: str | None = None
    label: np.datetime64 | None = None

    @property
    def time_indices(self) -> tuple[int, ...]:
        """Every time index the layer reads."""
        return self.times or (self.time_index,)


@dataclass(frozen=True)
class MaskSource:
    """A classification band (SCL) masking the grid's pixels, possibly on a coarser grid.

    Band pixel ``(r, c)`` reads mask pixel ``((r + offset[0]) // factor, (c + offset[1]) //
    factor)``; ``time_map[t]`` is the mask's time index for band time ``t`` (-1: no mask that
    date). Pixels whose class is in ``classes`` are excluded and counted as ``nodata``.
    """

    array: AsyncArray[Any]
    factor: int
    offset: tuple[int, int]
    time_map: np.ndarray
    classes: np.ndarray


@dataclass
class GridJob:
    """Inputs of one grid's query."""

    plan: ChunkPlan
    geoms: np.ndarray
    arrays: Mapping[str, AsyncArray[Any]]
    nodata: Mapping[str, float | int | None]
    layers: Sequence[Layer]
    stats: StatSpec
    all_touched: bool
    concurrency: int
    coverage: bool = False
    categorical: bool = False
    mask: MaskSource | None = None
    workers: int = 2
    #: Pixel windows ``(n, 4)`` of the sources of (band, time index), for bands without
    #: nodata: pixels outside them hold no data (the fill value is a valid code there).
    footprints: Mapping[tuple[str, int], np.ndarray] = field(default_factory=dict)
    #: Ground area (m²) of one pixel in each grid row: categorical layers sum it per class.
    row_area: np.ndarray | None = None
    #: The query's deadline: seconds asked for, and when it ends (``time.monotonic()``).
    deadline: float | None = None
    deadline_at: float | None = None


def _covered(windows: np.ndarray | None, pix: np.ndarray, window: tuple[int, int, int, int]
             ) -> np.ndarray | None:
    """Which of a chunk's pixels ``pix`` (flat indices) a band's sources cover; None: all."""
    if windows is None:
        return None
    r0, r1, c0, c1 = window
    whole = window_covered(windows, r0, r1, c0, c1)
    if whole is True:
        return None
    if whole is False:
        return np.zeros(pix.shape, dtype=bool)
    width = c1 - c0
    return covered_mask(windows, r0 + pix // width, c0 + pix % width)


class _Reducer:
    """Accumulates per-parcel statistics for every layer of one grid."""

    def __init__(self, job: GridJob) -> None:
        n = len(job.geoms)
        self.job = job
        self.partials = [Partials(n, weighted=job.coverage) for _ in job.layers]
        #: what is rasterised per chunk: parcels cut to the grid (their pixels unchanged)
        self.burn = clip_to_grid(job.geoms, job.plan.spec)
        beyond = outside_pixels(job.geoms, job.plan.spec, all_touched=job.all_touched,
                                coverage=job.coverage)
        for p in self.partials:
            p.nodata += beyond.astype(p.nodata.dtype)
        self.remaining = job.plan.per_parcel.copy()
        self.values: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = [
            [] for _ in job.layers]
        self.exact: list[dict[str, np.ndarray]] = [
            {name: np.full(n, np.nan) for name in self._exact_names()} for _ in job.layers
        ]
        self.classes: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in job.layers]
        self._since_flush = 0

    def _exact_names(self) -> list[str]:
        spec = self.job.stats
        names = ["median"] if "median" in spec.names else []
        return names + [f"percentile_{q:g}" for q in spec.percentiles]

    def prepare(self, k: int, data: Mapping[Key, np.ndarray],
                masks: Mapping[int, np.ndarray]) -> tuple[int, list[Prepared]]:
        """Label chunk ``k`` and pick each layer's valid pixels (pure; runs in any thread)."""
        job = self.job
        plan = job.plan
        r0, r1, c0, c1 = plan.chunk_window(k)
        ids = plan.parcels_of(k)
        transform = plan.spec.transform @ plan.spec.transform.translation(c0, r0)
        labels: ChunkLabels = label_chunk(
            self.burn[ids], ids, job.plan.passes[ids], transform, (r1 - r0, c1 - c0),
            all_touched=job.all_touched, coverage=job.coverage, base=plan.spec.transform,
            offset=(r0, c0),
        )
        pix, par, w = labels.pixels, labels.parcels, labels.weights
        area = (job.row_area[r0 + pix // (c1 - c0)]
                if job.categorical and job.row_area is not None else None)
        out: list[Prepared] = []
        for layer in job.layers:
            if layer.composite is None:
                v, ok = self._observe(layer, layer.time_index, data, masks, pix,
                                      (r0, r1, c0, c1))
            else:
                obs = [self._observe(layer, t, data, masks, pix, (r0, r1, c0, c1))
                       for t in layer.times]
                v, ok = composite_values(np.stack([o[0] for o in obs]),
                                         np.stack([o[1] for o in obs]), layer.composite)
            if ok.all():
                out.append((par, v, w, par[:0], None if w is None else w[:0], area))
            else:
                out.append((par[ok], v[ok], None if w is None else w[ok], par[~ok],
                            None if w is None else w[~ok], None if area is None else area[ok]))
        return k, out

    def _observe(self, layer: Layer, t: int, data: Mapping[Key, np.ndarray],
                 masks: Mapping[int, np.ndarray], pix: np.ndarray,
                 window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``layer``'s values at time index ``t`` on the pixels ``pix`` of a chunk, and which
        are valid (not nodata, covered by a source, finite, not masked)."""
        job = self.job
        if layer.formula is None:
            band = layer.inputs[0]
            v = data[(band, t)].ravel()[pix]
            ok = valid_mask(v, job.nodata[band])
        else:
            inputs = {b: data[(b, t)].ravel()[pix] for b in layer.inputs}
            ok = np.ones(pix.shape, dtype=bool)
            for b, arr in inputs.items():
                ok &= valid_mask(arr, job.nodata[b])
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                v = np.asarray(layer.formula(inputs), dtype=np.float64)
            ok &= np.isfinite(v)
        for b in layer.inputs:
            cov = _covered(job.footprints.get((b, t)), pix, window)
            if cov is not None:
                ok &= cov
        bad = masks.get(t)
        if bad is not None:
            ok &= ~bad.ravel()[pix]
        return v, ok

    def accumulate(self, k: int, prepared: Sequence[Prepared]) -> None:
        """Fold one prepared chunk into the per-parcel partials (in chunk order)."""
        job = self.job
        for li, (par, v, w, par_bad, w_bad, area) in enumerate(prepared):
            if job.categorical:
                self._add_classes(li, par, v, w, area)
            else:
                self.partials[li].add_sorted(par, v, w)
            self.partials[li].add_nodata(par_bad, w_bad)
            if job.stats.needs_values and not job.categorical:
                self.values[li].append((par, v, w))
        self.remaining[job.plan.parcels_of(k)] -= 1
        self._since_flush += 1
        if job.stats.needs_values and self._since_flush >= 32:
            self.flush()

    def add_chunk(self, k: int, data: Mapping[Key, np.ndarray],
                  masks: Mapping[int, np.ndarray]) -> None:
        """:meth:`prepare` then :meth:`accumulate` chunk ``k``."""
        self.accumulate(*self.prepare(k, data, masks))

    def _add_classes(self, li: int, par: np.ndarray, v: np.ndarray,
                     w: np.ndarray | None, area: np.ndarray | None = None) -> None:
        if par.size == 0:
            return
        pairs, inv = np.unique(np.stack([par, v.astype(np.int64)], axis=1), axis=0,
                               return_inverse=True)
        cnt = np.bincount(inv.ravel(), weights=w, minlength=len(pairs))
        if area is None:
            area_sum = np.full(len(pairs), np.nan)
        else:
            area_sum = np.bincount(inv.ravel(), weights=area if w is None else area * w,
                                   minlength=len(pairs))
        self.classes[li].append((pairs[:, 0], pairs[:, 1], cnt, area_sum))
        self.partials[li].count += np.bincount(
            par, weights=w, minlength=self.partials[li].count.size
        ).astype(self.partials[li].count.dtype)

    def flush(self, final: bool = False) -> None:
        """Reduce exact statistics for parcels whose chunks have all been read."""
        self._since_flush = 0
        spec = self.job.stats
        n = len(self.job.geoms)
        done = self.remaining == 0
        for li in range(len(self.job.layers)):
            if not self.values[li]:
                continue
            par = np.concatenate([p for p, _, _ in self.values[li]])
            val = np.concatenate([v for _, v, _ in self.values[li]])
            wts = (np.concatenate([w for _, _, w in self.values[li]])
                   if self.job.coverage else None)
            sel = np.ones(par.shape, dtype=bool) if final else done[par]
            if sel.any():
                res = exact_stats(par[sel], val[sel], n, spec.percentiles,
                                  median="median" in spec.names,
                                  weights=None if wts is None else wts[sel])
                for name, arr in res.items():
                    hit = ~np.isnan(arr)
                    self.exact[li][name][hit] = arr[hit]
            keep = ~sel
            self.values[li] = ([(par[keep], val[keep], None if wts is None else wts[keep])]
                               if keep.any() else [])

    def results(self) -> list[dict[str, np.ndarray]]:
        if self.job.categorical:
            return [self._class_result(li) for li in range(len(self.job.layers))]
        if self.job.stats.needs_values:
            self.flush(final=True)
        n = len(self.job.geoms)
        ids = np.arange(n)
        out = []
        for li in range(len(self.job.layers)):
            res = self.partials[li].result(self.job.stats, ids)
            for name, arr in self.exact[li].items():
                arr[self.partials[li].count == 0] = np.nan
                res[name] = arr
            out.append({name: res[name] for name in self.job.stats.names})
        return out

    def _class_result(self, li: int) -> dict[str, np.ndarray]:
        parts = self.classes[li]
        if not parts:
            return {"parcel": np.empty(0, np.int64), "class": np.empty(0, np.int64),
                    "count": np.empty(0), "area": np.empty(0)}
        par = np.concatenate([p[0] for p in parts])
        cls = np.concatenate([p[1] for p in parts])
        cnt = np.concatenate([p[2] for p in parts])
        area = np.concatenate([p[3] for p in parts])
        pairs, inv = np.unique(np.stack([par, cls], axis=1), axis=0, return_inverse=True)
        total = np.bincount(inv.ravel(), weights=cnt, minlength=len(pairs))
        area_total = np.bincount(inv.ravel(), weights=area, minlength=len(pairs))
        return {"parcel": pairs[:, 0], "class": pairs[:, 1], "count": total,
                "area": area_total}


class _MaskCache:
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

    async def window(self, win: tuple[int, int, int, int], times: Sequence[int]
                     ) -> dict[int, np.ndarray]:
        """Boolean 'masked' arrays of the band window ``win`` for band time indices ``times``."""
        src = self.src
        arr = src.array
        f = src.factor
        r0, r1, c0, c1 = win
        oy, ox = src.offset
        # mask pixels covering the window
        mr0, mr1 = (r0 + oy) // f, (r1 - 1 + oy) // f + 1
        mc0, mc1 = (c0 + ox) // f, (c1 - 1 + ox) // f + 1
        ct, ch, cw = arr.chunks
        out: dict[int, np.ndarray] = {}
        wanted = [(t, int(src.time_map[t])) for t in times if src.time_map[t] >= 0]
        # clip to the mask's coverage: band pixels beyond it have no mask (they are kept)
        cr0, cr1 = max(mr0, 0), min(mr1, arr.shape[1])
        cc0, cc1 = max(mc0, 0), min(mc1, arr.shape[2])
        if not wanted or cr1 <= cr0 or cc1 <= cc0:
            return out
        tcs = sorted({mt // ct for _, mt in wanted})
        rows = range(cr0 // ch, (cr1 - 1) // ch + 1)
        cols = range(cc0 // cw, (cc1 - 1) // cw + 1)
        keys = [(tc, cy, cx) for tc in tcs for cy in rows for cx in cols]
        blocks = dict(zip(keys, await asyncio.gather(*(self._block(*k) for k in keys)),
                          strict=True))
        ys = (np.arange(r0, r1) + oy) // f - mr0
        xs = (np.arange(c0, c1) + ox) // f - mc0
        for t, mt in wanted:
            tc = mt // ct
            bad = np.zeros((mr1 - mr0, mc1 - mc0), dtype=bool)
            for cy in rows:
                for cx in cols:
                    b = blocks[(tc, cy, cx)][mt - tc * ct]
                    y0, x0 = cy * ch, cx * cw
                    ya, yb = max(cr0, y0), min(cr1, y0 + b.shape[0])
                    xa, xb = max(cc0, x0), min(cc1, x0 + b.shape[1])
                    bad[ya - mr0:yb - mr0, xa - mc0:xb - mc0] = np.isin(
                        b[ya - y0:yb - y0, xa - x0:xb - x0], src.classes)
            out[t] = bad[np.ix_(ys, xs)]
        return out


async def run_grid(
    job: GridJob, on_chunk: Callable[[int], None] | None = None
) -> list[dict[str, np.ndarray]]:
    """Run one grid's query; returns, per layer, a dict of statistic -> per-parcel array
    (for ``categorical``: ``parcel``, ``class``, ``count`` and ``area`` (m², from
    ``row_area``) arrays).

    Raises
    ------
    QueryDeadlineError
        ``job.deadline_at`` passed first; in-flight requests are cancelled.
    """
    left = None if job.deadline_at is None else job.deadline_at - time.monotonic()
    done = [0]

    def counted(n: int) -> None:
        done[0] += 1
        if on_chunk is not None:
            on_chunk(n)

    scope = asyncio.timeout(left)
    try:
        async with scope:
            return await _run_grid(job, counted)
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise QueryDeadlineError(
            f"query did not finish within its deadline of {job.deadline:g} s ({done[0]} of "
            f"{job.plan.n_chunks} chunks of this grid done): raise deadline= (CLI: --deadline)"
            " or look at the store's latency"
        ) from exc


async def _run_grid(
    job: GridJob, on_chunk: Callable[[int], None]
) -> list[dict[str, np.ndarray]]:
    plan = job.plan
    reducer = _Reducer(job)
    needed = sorted({(b, t) for layer in job.layers for b in layer.inputs
                     for t in layer.time_indices})
    # per band: the time blocks to read (one zarr chunk along time each) and dates in them
    reads: list[tuple[str, int, int, list[int]]] = []
    for band in sorted({b for b, _ in needed}):
        ct = job.arrays[band].chunks[0]
        ts = sorted(t for b, t in needed if b == band)
        by_block: dict[int, list[int]] = {}
        for t in ts:
            by_block.setdefault(t // ct, []).append(t)
        reads += [(band, min(g), max(g) + 1, g) for g in by_block.values()]
    times = sorted({t for _, t in needed})
    sem = asyncio.Semaphore(job.concurrency)
    masks = None
    if job.mask is not None:
        # band chunk rows 2r and 2r+1 (for a 2x coarser mask) both need mask chunk row r:
        # one row of mask chunks, plus the row being started, plus the fetch window's reach
        n_cols = -(-job.mask.array.shape[2] // job.mask.array.chunks[2])
        masks = _MaskCache(job.mask, sem, capacity=2 * n_cols + 8)

    async def get(band: str, t0: int, t1: int, win: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = win
        async with sem:
            out = await job.arrays[band].getitem((slice(t0, t1), slice(r0, r1), slice(c0, c1)))
        return np.asarray(out)

    async def fetch(k: int) -> tuple[int, dict[Key, np.ndarray], dict[int, np.ndarray]]:
        win = plan.chunk_window(k)
        coros: list[Any] = [get(b, t0, t1, win) for b, t0, t1, _ in reads]
        if masks is not None:
            coros.append(masks.window(win, times))
        got = await asyncio.gather(*coros)
        data: dict[Key, np.ndarray] = {}
        for (band, t0, _, ts), block in zip(reads, got, strict=False):
            for t in ts:
                data[(band, t)] = block[t - t0]
        return k, data, (got[-1] if masks is not None else {})

    async def prepare(k: int) -> tuple[int, list[Prepared]]:
        k, data, bad = await fetch(k)
        async with cpu:
            return await asyncio.to_thread(reducer.prepare, k, data, bad)

    # Chunks are fetched and prepared (labelled, values picked: GDAL and numpy release the
    # GIL) ``workers`` at a time, and folded into the partials in spatial order.
    cpu = asyncio.Semaphore(job.workers)
    window = max(2, 2 * job.concurrency // max(1, len(reads)))
    pending: deque[asyncio.Task[Any]] = deque()
    nxt = 0
    try:
        while nxt < plan.n_chunks and len(pending) < window:
            pending.append(asyncio.ensure_future(prepare(nxt)))
            nxt += 1
        while pending:
            k, prepared = await pending.popleft()
            while nxt < plan.n_chunks and len(pending) < window:
                pending.append(asyncio.ensure_future(prepare(nxt)))
                nxt += 1
            # folding (and the exact quantiles of finished parcels) runs off the event loop,
            # so fetches keep flowing; awaiting it here keeps the spatial order
            await asyncio.to_thread(reducer.accumulate, k, prepared)
            on_chunk(len(reads))
    finally:
        for task in pending:
            task.cancel()
    return await asyncio.to_thread(reducer.results)
