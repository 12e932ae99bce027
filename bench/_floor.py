"""The floor: the irreducible work of a batch query, with none of the engine's bookkeeping.

Fetch every chunk covering the parcels once (one request per chunk, band and time block,
``PARCELZARR_CONCURRENCY`` in flight, as the engine), decode it (zarr), label every parcel's
pixels once per strip of chunk rows (one GDAL burn of all the strip's parcels for the centre
rule, :func:`parcelzarr.query._coverage.coverage_cells` for coverage weights), and reduce each
band and date with ``np.bincount`` into count, sum and sum of squares. Strips are fetched ahead
while earlier strips are reduced in ``PARCELZARR_WORKERS`` threads.

Not what parcelzarr does, and not a product: overlapping parcels are not kept apart (the last
burned wins), there are no footprints, masks, medians or reports. It is the bound the engine is
measured against (``parcelzarr-batch`` / ``floor``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine
from parcelzarr.query._coverage import coverage_cells
from parcelzarr.query._plan import plan_chunks
from rasterio.features import rasterize
from zarr.core.sync import sync

import parcelzarr as pz
from parcelzarr import _config

__all__ = ["floor_stats"]

_Sums = tuple[np.ndarray, np.ndarray, np.ndarray]  # (layers, n) weights, sums, squares


def _labels(geoms: np.ndarray, ids: np.ndarray, transform: Affine,
            window: tuple[int, int, int, int], coverage: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pixels (flat in ``window``), parcel of each, weights (None: centre rule)."""
    r0, r1, c0, c1 = window
    if coverage:
        pix, pos, w = coverage_cells(geoms, transform, window)
        return pix, ids[pos], w
    t = transform @ Affine.translation(c0, r0)
    burned = rasterize(zip(geoms, (ids + 1).tolist(), strict=True), out_shape=(r1 - r0, c1 - c0),
                       transform=t, fill=0, dtype="int32").ravel()
    pix = np.flatnonzero(burned)
    return pix, burned[pix].astype(np.int64) - 1, None


def _reduce(blocks: dict[str, np.ndarray], geoms: np.ndarray, ids: np.ndarray,
            transform: Affine, window: tuple[int, int, int, int], coverage: bool,
            bands: list[str], t_index: list[int], n: int, nodata: dict[str, Any]) -> _Sums:
    """One strip: label once, then bincount every (band, date)."""
    pix, par, w = _labels(geoms, ids, transform, window, coverage)
    layers = len(bands) * len(t_index)
    cnt, s1, s2 = (np.zeros((layers, n)) for _ in range(3))
    for bi, band in enumerate(bands):
        flat = blocks[band].reshape(blocks[band].shape[0], -1)
        for ti, t in enumerate(t_index):
            v = flat[t, pix]
            ok = v != nodata[band]
            p, x = par[ok], v[ok].astype(np.float64)
            wk = None if w is None else w[ok]
            wx = x if wk is None else wk * x
            li = bi * len(t_index) + ti
            cnt[li] = np.bincount(p, weights=wk, minlength=n)
            s1[li] = np.bincount(p, weights=wx, minlength=n)
            s2[li] = np.bincount(p, weights=wx * x, minlength=n)
    return cnt, s1, s2


def floor_stats(store: pz.ParcelStore, parcels: Any, *, bands: list[str], coverage: bool,
                all_dates: bool) -> pd.DataFrame:
    """Long table ``parcel_id, band, [time,] count, mean, std`` of ``parcels`` (GeoDataFrame
    in the store's grid CRS, with ``parcel_id``); dates: all (``all_dates``) or the first."""
    (info,) = store.grids.values()
    spec = info.spec
    geoms = parcels.geometry.to_numpy()
    n = len(geoms)
    times = list(range(len(info.times))) if all_dates else [0]
    arrays = {b: store._array(info.name, b)._async_array for b in bands}
    nodata = {b: info.bands[b]["nodata"] for b in bands}
    plan = plan_chunks(geoms, spec, coverage=True)  # the covering chunks; no overlap colouring
    rows: dict[int, list[int]] = {}
    for k in range(plan.n_chunks):
        rows.setdefault(int(plan.chunks[k][0]), []).append(k)
    bounds = shapely.bounds(geoms)
    sem = asyncio.Semaphore(_config.default_concurrency())
    cpu = asyncio.Semaphore(_config.default_workers())

    async def strip(cy: int) -> _Sums:
        ks = rows[cy]
        r0, r1, _, _ = plan.chunk_window(ks[0])
        c0 = min(plan.chunk_window(k)[2] for k in ks)
        c1 = max(plan.chunk_window(k)[3] for k in ks)

        async def get(band: str, k: int) -> tuple[str, int, np.ndarray]:
            _, _, a, b = plan.chunk_window(k)
            async with sem:
                block = await arrays[band].getitem(
                    (slice(times[0], times[-1] + 1), slice(r0, r1), slice(a, b)))
            return band, k, np.asarray(block)

        got = await asyncio.gather(*(get(b, k) for b in bands for k in ks))
        blocks = {b: np.zeros((len(times), r1 - r0, c1 - c0), dtype=arrays[b].dtype)
                  for b in bands}
        for band, k, block in got:
            _, _, a, b = plan.chunk_window(k)
            blocks[band][:, :, a - c0:b - c0] = block
        top, bottom = spec.y0 - r0 * spec.res_y, spec.y0 - r1 * spec.res_y
        ids = np.flatnonzero((bounds[:, 1] < top) & (bounds[:, 3] > bottom))
        async with cpu:
            return await asyncio.to_thread(
                _reduce, blocks, geoms[ids], ids, spec.transform, (r0, r1, c0, c1), coverage,
                bands, list(range(len(times))), n, nodata)

    async def run() -> _Sums:
        order = sorted(rows)
        total: _Sums | None = None
        pending: deque[asyncio.Task[_Sums]] = deque()
        ahead = max(2, _config.default_workers() + 1)
        for cy in order:
            pending.append(asyncio.ensure_future(strip(cy)))
            if len(pending) > ahead:
                total = _add(total, await pending.popleft())
        while pending:
            total = _add(total, await pending.popleft())
        assert total is not None
        return total

    cnt, s1, s2 = sync(run())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean * mean, 0.0))
    frames = []
    for bi, band in enumerate(bands):
        for ti, t in enumerate(times):
            li = bi * len(times) + ti
            frame = pd.DataFrame({"parcel_id": parcels["parcel_id"].to_numpy(), "band": band,
                                  "count": cnt[li], "mean": mean[li], "std": std[li]})
            if all_dates:
                frame.insert(2, "time", pd.Timestamp(info.times[t]).normalize())
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    if not coverage:
        df["count"] = df["count"].round().astype("int64")
    return df


def _add(total: _Sums | None, part: _Sums) -> _Sums:
    if total is None:
        return part
    return (total[0] + part[0], total[1] + part[1], total[2] + part[2])
