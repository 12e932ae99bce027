"""The dry run: what :meth:`ParcelStore.zonal_stats` will read and cost, reading no pixel.

:func:`plan_query` makes the query's chunk plans exactly as ``zonal_stats`` does (same parcels,
grids, dates, layers, mask), lists the objects those plans will GET (one per spatial chunk,
band and time block, plus the mask's chunks) and looks up their stored sizes (a ``stat`` on a
local store, a HEAD on blob storage; above :data:`SIZE_SAMPLE` objects a uniform sample of
them, scaled). Absent objects (never written: all nodata) still cost a GET, of 0 bytes, as
they do in the real query. :func:`parcelzarr.query._cost.estimate` prices the counts.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
import zarr

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue, band_array
from parcelzarr._zarr_compat import sync

from ._assign import assign
from ._cost import RATE_CHUNK_PX, CostModel, GridCost, QueryPlan, estimate
from ._engine import Layer
from ._mask import MaskSource
from ._parcels import ParcelSet
from ._plan import ChunkPlan, plan_chunks
from ._rasterize import too_large
from ._request import ZonalRequest, select_dates
from ._zonal import _mask_source, _weights

__all__ = ["SIZE_SAMPLE", "chunk_keys", "mask_keys", "plan_query"]

#: Above this many objects, sizes are looked up for a uniform sample of them and scaled.
SIZE_SAMPLE = 4096


def _key(arr: Any, coords: tuple[int, int, int]) -> str:
    return f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"


def chunk_keys(plan: ChunkPlan, arrays: dict[str, Any], layers: Sequence[Layer]) -> list[str]:
    """Object keys the engine GETs for ``plan``: per spatial chunk, per band, one per time
    block (zarr chunk along time) holding a date of ``layers`` (pure)."""
    keys: list[str] = []
    for band, arr in sorted(arrays.items()):
        ct = arr.chunks[0]
        blocks = sorted({la.time_index // ct for la in layers if band in la.inputs})
        for tb in blocks:
            keys += [_key(arr, (tb, int(cy), int(cx))) for cy, cx in plan.chunks]
    return keys


def mask_keys(plan: ChunkPlan, mask: MaskSource, layers: Sequence[Layer]) -> set[str]:
    """Mask (SCL) object keys the engine GETs for ``plan``: the mask chunks under each band
    chunk, for the mask dates of the layers' dates (pure)."""
    arr = mask.array
    ct, ch, cw = arr.chunks
    f = mask.factor
    oy, ox = mask.offset
    tms = {int(mask.time_map[la.time_index]) for la in layers}
    tcs = sorted({t // ct for t in tms if t >= 0})
    out: set[str] = set()
    if not tcs:
        return out
    for k in range(plan.n_chunks):
        r0, r1, c0, c1 = plan.chunk_window(k)
        mr0, mr1 = (r0 + oy) // f, (r1 - 1 + oy) // f + 1
        mc0, mc1 = (c0 + ox) // f, (c1 - 1 + ox) // f + 1
        cr0, cr1 = max(mr0, 0), min(mr1, arr.shape[1])
        cc0, cc1 = max(mc0, 0), min(mc1, arr.shape[2])
        if cr1 <= cr0 or cc1 <= cc0:
            continue
        for tc in tcs:
            for cy in range(cr0 // ch, (cr1 - 1) // ch + 1):
                for cx in range(cc0 // cw, (cc1 - 1) // cw + 1):
                    out.add(_key(arr, (tc, cy, cx)))
    return out


def _sizes(store: Any, keys: Sequence[str], concurrency: int) -> list[int]:
    """Stored size of each key (0: not written)."""

    async def run() -> list[int]:
        sem = asyncio.Semaphore(concurrency)

        async def size(key: str) -> int:
            async with sem:
                try:
                    return int(await store.getsize(key))
                except (FileNotFoundError, KeyError):
                    return 0

        return list(await asyncio.gather(*(size(k) for k in keys)))

    return sync(run())


def _bytes(store: Any, keys: Sequence[str], concurrency: int) -> tuple[int, bool, int]:
    """(bytes, exact, objects written) of ``keys``, from a sample above :data:`SIZE_SAMPLE`."""
    if len(keys) <= SIZE_SAMPLE:
        sizes = _sizes(store, keys, concurrency)
        return sum(sizes), True, sum(1 for s in sizes if s > 0)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(keys), size=SIZE_SAMPLE, replace=False)
    arr = np.asarray(_sizes(store, [keys[i] for i in pick], concurrency), dtype=np.float64)
    scale = len(keys) / SIZE_SAMPLE
    return round(float(arr.sum()) * scale), False, round(float((arr > 0).sum()) * scale)


def plan_query(store: Any, root: zarr.Group, catalogue: Catalogue, request: ZonalRequest,
               pset: ParcelSet, *, started: float | None = None,
               model: CostModel | None = None) -> QueryPlan:
    """The dry run of ``request`` over ``pset`` (see the module doc): the same dates, grid
    assignment, plans and mask as :func:`._zonal.run_zonal`, no pixel read. ``store`` is the
    zarr store whose objects are sized; ``started`` when the call began."""
    t0 = _time.perf_counter() if started is None else started
    dates = select_dates(catalogue, request.outputs, request.time)
    classes = np.asarray(request.mask_classes, dtype=np.int64)
    conc = request.concurrency or _config.default_concurrency()
    grids: list[GridCost] = []
    all_keys: list[str] = []
    per_grid: list[tuple[str, int, int, int, int, int]] = []
    cpu_chunks = 0.0  # band chunks in units of the rate's 256² chunk (CPU follows pixels)
    for a in assign(pset, catalogue, request.outputs):
        info = catalogue.grids[a.grid]
        layers = [Layer(o.name, int(t), o.inputs) for o in a.outputs
                  for t in dates[(a.grid, o.name)]]
        if not layers or a.subset.size == 0:
            continue
        geoms = pset.to_crs(info.spec.crs)[a.subset]
        big = too_large(geoms, info.spec)
        if big.any():
            geoms = np.where(big, shapely.Polygon(), geoms)
        plan = plan_chunks(geoms, info.spec, all_touched=request.all_touched,
                           coverage=request.coverage)
        arrays = {b: band_array(root, a.grid, b) for o in a.outputs for b in o.inputs}
        keys = chunk_keys(plan, arrays, layers)
        n_band_chunks = len(keys)
        cpu_chunks += n_band_chunks * info.spec.chunk_y * info.spec.chunk_x / RATE_CHUNK_PX
        if request.mask_band is not None:
            src = _mask_source(root, catalogue, info, request.mask_band, classes)
            keys += sorted(mask_keys(plan, src, layers))
        weights = _weights(root, catalogue, info, request)
        if weights is not None:  # the weighting raster's chunks, read as the mask's
            keys += sorted({k for w in weights.layers.values()
                            for k in mask_keys(plan, w, layers)})
        per_grid.append((a.grid, int(a.subset.size), plan.n_chunks, n_band_chunks,
                         len(all_keys), len(all_keys) + len(keys)))
        all_keys += keys
    bytes_exact = True
    for name, n_par, n_spatial, n_chunks, lo, hi in per_grid:
        nbytes, exact, written = _bytes(store, all_keys[lo:hi], conc)
        bytes_exact &= exact
        grids.append(GridCost(grid=name, parcels=n_par, spatial_chunks=n_spatial,
                              chunks=n_chunks, requests=hi - lo, bytes_read=nbytes,
                              objects_written=written))
    model = model or CostModel.from_config()
    chunks = sum(g.chunks for g in grids)
    requests = sum(g.requests for g in grids)
    nbytes = sum(g.bytes_read for g in grids)
    seconds, get_usd, egress_usd = estimate(chunks=cpu_chunks, requests=requests,
                                            bytes_read=nbytes, model=model)
    planned = _time.perf_counter() - t0
    return QueryPlan(parcels=len(pset), chunks=chunks, requests=requests, bytes_read=nbytes,
                     bytes_exact=bytes_exact, seconds=seconds + planned,
                     get_cost_usd=get_usd, egress_usd=egress_usd, plan_seconds=planned,
                     grids=tuple(grids), model=model)
