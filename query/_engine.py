"""The batch engine: fetch each needed chunk once, concurrently, and reduce per parcel.

One coroutine per grid runs on zarr's event loop: a sliding window of chunk fetches (bounded
requests in flight) in spatial order, while the CPU work of each fetched chunk (rasterising the
parcels that touch it, then vectorised reductions) runs in a worker thread. Per-parcel partials
are kept for all parcels (O(parcels) memory); pixel values for exact medians and percentiles
are kept only until a parcel's last chunk has been read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr import AsyncArray

from ._plan import ChunkPlan
from ._rasterize import ChunkLabels, label_chunk
from ._stats import Partials, StatSpec, exact_stats

__all__ = ["GridJob", "Layer", "run_grid"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layer:
    """One output layer: a band (or derived index) at one time index of the grid."""

    name: str
    time_index: int
    inputs: tuple[str, ...]
    formula: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None


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


def _valid(v: np.ndarray, nodata: float | int | None) -> np.ndarray:
    if nodata is None:
        return np.ones(v.shape, dtype=bool) if v.dtype.kind != "f" else ~np.isnan(v)
    if isinstance(nodata, float) and np.isnan(nodata):
        return ~np.isnan(v)
    ok = v != nodata
    if v.dtype.kind == "f":
        ok &= ~np.isnan(v)
    return ok


class _Reducer:
    """Accumulates per-parcel statistics for every layer of one grid."""

    def __init__(self, job: GridJob) -> None:
        n = len(job.geoms)
        self.job = job
        self.partials = [Partials(n) for _ in job.layers]
        self.remaining = job.plan.per_parcel.copy()
        self.values: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in job.layers]
        self.exact: list[dict[str, np.ndarray]] = [
            {name: np.full(n, np.nan) for name in self._exact_names()} for _ in job.layers
        ]
        self._since_flush = 0

    def _exact_names(self) -> list[str]:
        spec = self.job.stats
        names = ["median"] if "median" in spec.names else []
        return names + [f"percentile_{q:g}" for q in spec.percentiles]

    def add_chunk(self, k: int, data: Mapping[tuple[str, int], np.ndarray]) -> None:
        job = self.job
        plan = job.plan
        r0, r1, c0, c1 = plan.chunk_window(k)
        ids = plan.parcels_of(k)
        transform = plan.spec.transform @ plan.spec.transform.translation(c0, r0)
        labels: ChunkLabels = label_chunk(
            job.geoms[ids], ids, job.plan.passes[ids], transform, (r1 - r0, c1 - c0),
            all_touched=job.all_touched,
        )
        pix, par = labels.pixels, labels.parcels
        for li, layer in enumerate(job.layers):
            if layer.formula is None:
                band = layer.inputs[0]
                v = data[(band, layer.time_index)].ravel()[pix]
                ok = _valid(v, job.nodata[band])
            else:
                inputs = {b: data[(b, layer.time_index)].ravel()[pix] for b in layer.inputs}
                ok = np.ones(pix.shape, dtype=bool)
                for b, arr in inputs.items():
                    ok &= _valid(arr, job.nodata[b])
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.asarray(layer.formula(inputs), dtype=np.float64)
                ok &= np.isfinite(v)
            self.partials[li].add_sorted(par[ok], v[ok])
            self.partials[li].add_nodata(par[~ok])
            if job.stats.needs_values:
                self.values[li].append((par[ok], v[ok]))
        self.remaining[ids] -= 1
        self._since_flush += 1
        if job.stats.needs_values and self._since_flush >= 16:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Reduce exact statistics for parcels whose chunks have all been read."""
        self._since_flush = 0
        spec = self.job.stats
        n = len(self.job.geoms)
        done = self.remaining == 0
        for li in range(len(self.job.layers)):
            if not self.values[li]:
                continue
            par = np.concatenate([p for p, _ in self.values[li]])
            val = np.concatenate([v for _, v in self.values[li]])
            sel = np.ones(par.shape, dtype=bool) if final else done[par]
            if sel.any():
                res = exact_stats(par[sel], val[sel], n, spec.percentiles,
                                  median="median" in spec.names)
                touched = np.unique(par[sel])
                for name, arr in res.items():
                    self.exact[li][name][touched] = arr[touched]
            keep = ~sel
            self.values[li] = [(par[keep], val[keep])] if keep.any() else []

    def results(self) -> list[dict[str, np.ndarray]]:
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


async def run_grid(
    job: GridJob, on_chunk: Callable[[int], None] | None = None
) -> list[dict[str, np.ndarray]]:
    """Run one grid's query; returns, per layer, a dict of statistic -> per-parcel array."""
    plan = job.plan
    reducer = _Reducer(job)
    needed = sorted({(b, layer.time_index) for layer in job.layers for b in layer.inputs})
    sem = asyncio.Semaphore(job.concurrency)

    async def get(band: str, t: int, win: tuple[int, int, int, int]) -> np.ndarray:
        r0, r1, c0, c1 = win
        async with sem:
            out = await job.arrays[band].getitem((t, slice(r0, r1), slice(c0, c1)))
        return np.asarray(out)

    async def fetch(k: int) -> tuple[int, dict[tuple[str, int], np.ndarray]]:
        win = plan.chunk_window(k)
        arrays = await asyncio.gather(*(get(b, t, win) for b, t in needed))
        return k, dict(zip(needed, arrays, strict=True))

    window = max(2, 2 * job.concurrency // max(1, len(needed)))
    pending: deque[asyncio.Task[tuple[int, dict[tuple[str, int], np.ndarray]]]] = deque()
    nxt = 0
    try:
        while nxt < plan.n_chunks and len(pending) < window:
            pending.append(asyncio.ensure_future(fetch(nxt)))
            nxt += 1
        while pending:
            k, data = await pending.popleft()
            while nxt < plan.n_chunks and len(pending) < window:
                pending.append(asyncio.ensure_future(fetch(nxt)))
                nxt += 1
            await asyncio.to_thread(reducer.add_chunk, k, data)
            if on_chunk is not None:
                on_chunk(len(needed))
    finally:
        for task in pending:
            task.cancel()
    return reducer.results()
