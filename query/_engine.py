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
cache in spatial order and upsampled by nearest neighbour onto the band chunk; so is the
weighting raster of the ``weighted_*`` statistics (:mod:`._weights`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from zarr import AsyncArray

from parcelzarr._footprint import covered_mask, valid_mask, window_covered
from parcelzarr._grid import Tiles
from parcelzarr.errors import QueryDeadlineError

from ._composite import composite_values
from ._mask import MaskCache, MaskSource
from ._plan import ChunkPlan
from ._rasterize import ChunkLabels, clip_to_grid, label_chunk, outside_pixels
from ._stats import Partials, StatSpec, exact_stats
from ._weights import WeightReader, WeightSource

__all__ = ["ClassCounts", "GridJob", "Layer", "LayerResult", "MaskSource", "Prepared",
           "reduce_prepared", "run_grid"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass(frozen=True)
class Prepared:
    """One layer of one chunk, ready to reduce."""

    #: Parcels, values and coverage weights (None: unweighted) of the valid pixels.
    parcels: np.ndarray
    values: np.ndarray
    weights: np.ndarray | None
    #: Parcels and weights of the pixels without data (nodata, masked, not covered).
    nodata_parcels: np.ndarray
    nodata_weights: np.ndarray | None
    #: Ground area (m²) of each valid pixel (categorical layers only, else None).
    area: np.ndarray | None = None
    #: Coverage (or 1) times the weighting raster of each valid pixel (``weighted_*``).
    cw: np.ndarray | None = None

    def select(self, keep: np.ndarray) -> Prepared:
        """The pixels of the parcels where ``keep`` (a boolean per parcel index) is True,
        in the same order."""
        ok, bad = keep[self.parcels], keep[self.nodata_parcels]
        return Prepared(self.parcels[ok], self.values[ok],
                        None if self.weights is None else self.weights[ok],
                        self.nodata_parcels[bad],
                        None if self.nodata_weights is None else self.nodata_weights[bad],
                        None if self.area is None else self.area[ok],
                        None if self.cw is None else self.cw[ok])

    def renumber(self, new: np.ndarray) -> Prepared:
        """The same pixels with parcel index ``i`` renamed ``new[i]``, sorted by the new
        index (stable: each parcel's pixels keep their order)."""
        o, q = (np.argsort(new[self.parcels], kind="stable"),
                np.argsort(new[self.nodata_parcels], kind="stable"))
        return Prepared(new[self.parcels][o], self.values[o],
                        None if self.weights is None else self.weights[o],
                        new[self.nodata_parcels][q],
                        None if self.nodata_weights is None else self.nodata_weights[q],
                        None if self.area is None else self.area[o],
                        None if self.cw is None else self.cw[o])


@dataclass(frozen=True)
class ClassCounts:
    """A categorical layer's result: per (parcel, class) pair the (weighted) pixel count and
    the ground area they cover; ``parcel`` indexes the job's parcels."""

    parcel: np.ndarray
    klass: np.ndarray
    count: np.ndarray
    area: np.ndarray
    #: Per pair, the summed coverage times weight (``weights_band``), else None.
    wcount: np.ndarray | None = None


#: One layer's result: statistic name -> per-parcel values, or a categorical layer's counts.
LayerResult = dict[str, np.ndarray] | ClassCounts


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
    #: With ``coverage``: pixels the parcel covers less than this fraction of are left out
    #: (exactextract's ``min_coverage_frac``).
    min_coverage_frac: float = 0.0
    #: The weighting raster of the ``weighted_*`` statistics and ``weighted_frac``.
    weights: WeightSource | None = None
    #: Per parcel: True where its prepared pixels are handed over chunk by chunk (to
    #: ``run_grid``'s ``on_spill``) instead of reduced: parcels reaching beyond a Dask block,
    #: reduced where all their chunks meet (:mod:`._straddle`). None: reduce every parcel.
    spill: np.ndarray | None = None


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

    def __init__(self, job: GridJob,
                 on_spill: Callable[[int, list[Prepared]], None] | None = None) -> None:
        n = len(job.geoms)
        self.job = job
        self.on_spill = on_spill
        self.keep = None if job.spill is None else ~job.spill
        extrema = bool({"min", "max", "range"} & set(job.stats.names))
        self.partials = [Partials(n, weighted=job.coverage, extrema=extrema,
                                  raster_weights=job.stats.weighted)
                         for _ in job.layers]
        #: what is rasterised per chunk: parcels cut to the grid (their pixels unchanged)
        self.burn = clip_to_grid(job.geoms, job.plan.spec)
        #: GeoJSON mappings of ``burn`` for the centre rule, made once per parcel on first use
        #: (rasterio converts a shapely geometry twice in each chunk it is burned into)
        self._shapes: np.ndarray = np.full(n, None, dtype=object)
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
        self.classes: list[list[ClassCounts]] = [[] for _ in job.layers]
        self._since_flush = 0

    def _exact_names(self) -> list[str]:
        return self.job.stats.exact_names

    def prepare(self, k: int, data: Mapping[Key, np.ndarray],
                masks: Mapping[int, np.ndarray], weights: Mapping[int, np.ndarray] | None = None
                ) -> tuple[int, list[Prepared]]:
        """Label chunk ``k`` and pick each layer's valid pixels (pure; runs in any thread)."""
        job = self.job
        plan = job.plan
        r0, r1, c0, c1 = plan.chunk_window(k)
        ids = plan.parcels_of(k)
        transform = plan.spec.transform @ plan.spec.transform.translation(c0, r0)
        labels: ChunkLabels = label_chunk(
            self.burn[ids] if job.coverage else self._burn_shapes(ids), ids,
            job.plan.passes[ids], transform, (r1 - r0, c1 - c0),
            all_touched=job.all_touched, coverage=job.coverage, base=plan.spec.transform,
            offset=(r0, c0),
        )
        pix, par, w = labels.pixels, labels.parcels, labels.weights
        if w is not None and job.min_coverage_frac > 0:
            keep = w >= job.min_coverage_frac
            pix, par, w = pix[keep], par[keep], w[keep]
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
            cw = None
            if weights is not None:  # a static weights layer: any of the layer's dates
                cw = weights[layer.time_indices[0]].ravel()[pix]
                if w is not None:
                    cw = cw * w
            if ok.all():
                out.append(Prepared(par, v, w, par[:0], None if w is None else w[:0], area,
                                    cw))
            else:
                out.append(Prepared(par[ok], v[ok], None if w is None else w[ok], par[~ok],
                                    None if w is None else w[~ok],
                                    None if area is None else area[ok],
                                    None if cw is None else cw[ok]))
        return k, out

    def _burn_shapes(self, ids: np.ndarray) -> np.ndarray:
        """GeoJSON mappings of parcels ``ids`` to burn (cached; identical to what rasterio
        takes from the shapely geometries themselves)."""
        shapes = self._shapes[ids]
        for i in np.flatnonzero([s is None for s in shapes]):
            shapes[i] = self._shapes[ids[i]] = shapely.geometry.mapping(self.burn[ids[i]])
        return shapes

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
        """Fold one prepared chunk into the per-parcel partials (in chunk order); the pixels
        of ``job.spill`` parcels go to ``on_spill`` instead."""
        job = self.job
        if (self.keep is not None and job.spill is not None
                and job.spill[job.plan.parcels_of(k)].any()):
            if self.on_spill is not None:
                self.on_spill(k, [p.select(job.spill) for p in prepared])
            prepared = [p.select(self.keep) for p in prepared]
        for li, p in enumerate(prepared):
            if job.categorical:
                self._add_classes(li, p.parcels, p.values, p.weights, p.area, p.cw)
            else:
                self.partials[li].add_sorted(p.parcels, p.values, p.weights)
                if p.cw is not None:
                    self.partials[li].add_weighted(p.parcels, p.values, p.cw)
            self.partials[li].add_nodata(p.nodata_parcels, p.nodata_weights)
            if job.stats.needs_values and not job.categorical:
                self.values[li].append((p.parcels, p.values, p.weights))
        self.remaining[job.plan.parcels_of(k)] -= 1
        self._since_flush += 1
        if job.stats.needs_values and self._since_flush >= 32:
            self.flush()

    def _add_classes(self, li: int, par: np.ndarray, v: np.ndarray,
                     w: np.ndarray | None, area: np.ndarray | None = None,
                     cw: np.ndarray | None = None) -> None:
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
        wcnt = (None if cw is None
                else np.bincount(inv.ravel(), weights=cw, minlength=len(pairs)))
        self.classes[li].append(ClassCounts(pairs[:, 0], pairs[:, 1], cnt, area_sum, wcnt))
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
                                  median="median" in spec.names, modes=spec.modes,
                                  weights=None if wts is None else wts[sel])
                for name, arr in res.items():
                    hit = ~np.isnan(arr)
                    self.exact[li][name][hit] = arr[hit]
            keep = ~sel
            self.values[li] = ([(par[keep], val[keep], None if wts is None else wts[keep])]
                               if keep.any() else [])

    def results(self) -> list[LayerResult]:
        if self.job.categorical:
            return [self._class_result(li) for li in range(len(self.job.layers))]
        if self.job.stats.needs_values:
            self.flush(final=True)
        n = len(self.job.geoms)
        ids = np.arange(n)
        out: list[LayerResult] = []
        for li in range(len(self.job.layers)):
            res = self.partials[li].result(self.job.stats, ids)
            for name, arr in self.exact[li].items():
                arr[self.partials[li].count == 0] = np.nan
                res[name] = arr
            out.append({name: res[self.job.stats.source(name)]
                        for name in self.job.stats.names})
        return out

    def _class_result(self, li: int) -> ClassCounts:
        parts = self.classes[li]
        weighted = self.job.weights is not None
        if not parts:
            return ClassCounts(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0),
                               np.empty(0), np.empty(0) if weighted else None)
        par = np.concatenate([p.parcel for p in parts])
        cls = np.concatenate([p.klass for p in parts])
        cnt = np.concatenate([p.count for p in parts])
        area = np.concatenate([p.area for p in parts])
        pairs, inv = np.unique(np.stack([par, cls], axis=1), axis=0, return_inverse=True)
        total = np.bincount(inv.ravel(), weights=cnt, minlength=len(pairs))
        area_total = np.bincount(inv.ravel(), weights=area, minlength=len(pairs))
        wtotal = None
        if weighted:
            wc = np.concatenate([p.wcount for p in parts if p.wcount is not None])
            wtotal = np.bincount(inv.ravel(), weights=wc, minlength=len(pairs))
        return ClassCounts(pairs[:, 0], pairs[:, 1], total, area_total, wtotal)


def reduce_prepared(job: GridJob, chunks: Iterable[tuple[int, Sequence[Prepared]]]
                    ) -> list[LayerResult]:
    """The engine's reduction alone (no I/O): fold prepared chunks ``(k, per-layer
    Prepared)``, given in the plan's chunk order, and return what :func:`run_grid` returns.
    Pixels prepared elsewhere (Dask tasks) reduce here exactly as in a single run."""
    reducer = _Reducer(job)
    for k, prepared in chunks:
        reducer.accumulate(k, prepared)
    return reducer.results()


async def run_grid(
    job: GridJob, on_chunk: Callable[[int], None] | None = None,
    on_spill: Callable[[int, list[Prepared]], None] | None = None,
) -> list[LayerResult]:
    """Run one grid's query; returns, per layer, a dict of statistic -> per-parcel array
    (for ``categorical``: :class:`ClassCounts`, with ``area`` in m² from ``row_area``).
    ``on_spill(k, prepared)`` receives, in chunk order, the prepared pixels of the
    ``job.spill`` parcels in chunk ``k`` (whose own results are then meaningless).

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
            return await _run_grid(job, counted, on_spill)
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise QueryDeadlineError(
            f"query did not finish within its deadline of {job.deadline:g} s ({done[0]} of "
            f"{job.plan.n_chunks} chunks of this grid done): raise deadline= (CLI: --deadline)"
            " or look at the store's latency"
        ) from exc


async def _run_grid(
    job: GridJob, on_chunk: Callable[[int], None],
    on_spill: Callable[[int, list[Prepared]], None] | None,
) -> list[LayerResult]:
    plan = job.plan
    reducer = _Reducer(job, on_spill)
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
        mask_arr = job.mask.array
        n_cols = Tiles((mask_arr.shape[1], mask_arr.shape[2]),
                       (mask_arr.chunks[1], mask_arr.chunks[2])).counts[1]
        masks = MaskCache(job.mask, sem, capacity=2 * n_cols + 8)
    weights = None if job.weights is None else WeightReader(job.weights, sem)

    async def get(band: str, t0: int, t1: int, win: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = win
        async with sem:
            out = await job.arrays[band].getitem((slice(t0, t1), slice(r0, r1), slice(c0, c1)))
        return np.asarray(out)

    async def fetch(k: int) -> tuple[int, dict[Key, np.ndarray], dict[int, np.ndarray],
                                     dict[int, np.ndarray] | None]:
        win = plan.chunk_window(k)
        coros: list[Any] = [get(b, t0, t1, win) for b, t0, t1, _ in reads]
        if masks is not None:
            coros.append(masks.window(win, times))
        if weights is not None:
            coros.append(weights.window(win, times))
        got = await asyncio.gather(*coros)
        data: dict[Key, np.ndarray] = {}
        for (band, t0, _, ts), block in zip(reads, got, strict=False):
            for t in ts:
                data[(band, t)] = block[t - t0]
        extra = got[len(reads):]
        bad = extra.pop(0) if masks is not None else {}
        wts = extra.pop(0) if weights is not None else None
        return k, data, bad, wts

    async def prepare(k: int) -> tuple[int, list[Prepared]]:
        k, data, bad, wts = await fetch(k)
        async with cpu:
            return await asyncio.to_thread(reducer.prepare, k, data, bad, wts)

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
