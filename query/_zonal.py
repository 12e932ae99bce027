"""Zonal execution: run a :class:`ZonalRequest` over parcels against a store's catalogue.

Parcels are assigned to grids (:mod:`._assign`), each grid's chunk plan runs through the batch
engine (:func:`._engine.run_grid`), and the per-layer results become rows (:mod:`._frames`),
concatenated in input order with what the query cost.
"""

from __future__ import annotations

import logging
import time as _time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely
import zarr
from parcelzarr.stores import StoreHandle

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue, GridInfo, band_array
from parcelzarr._progress import progress
from parcelzarr._zarr_compat import sync
from parcelzarr.errors import BandNotFoundError

from ._area import areal_scale, row_areas
from ._assign import assign, parcel_status, warn_if_all_outside
from ._composite_layers import composite_layers
from ._engine import ClassCounts, GridJob, Layer, Prepared, run_grid
from ._frames import class_frame, concat, stat_frame, uncovered_frames
from ._indices import INDICES
from ._mask import MaskSource
from ._parcels import ParcelSet
from ._plan import ChunkPlan, plan_chunks
from ._rasterize import too_large
from ._report import QueryReport
from ._request import Output, ZonalRequest, select_dates
from ._straddle import BlockLimit, Engine, Pieces
from ._weights import WeightSource, weight_source

__all__ = ["mask_grid", "run_zonal"]

logger = logging.getLogger(__name__)


def run_zonal(handle: StoreHandle, root: zarr.Group, catalogue: Catalogue,
              request: ZonalRequest, pset: ParcelSet, *, quiet: bool = True,
              started: float | None = None, deadline_at: float | None = None,
              block: BlockLimit | None = None, pieces: Pieces | None = None,
              engine: Engine | None = None) -> tuple[pd.DataFrame, QueryReport]:
    """Statistics of ``request`` for the parcels ``pset``, and what they cost.

    ``started`` (``time.perf_counter()``) is when the call began, for the report;
    ``deadline_at`` (``time.monotonic()``) when the request's deadline ends (default: its
    deadline from now).

    A Dask block's task (:mod:`._straddle`) passes ``block``: only the chunks of its window
    are read, and the parcels it marks as straddling get no rows; their prepared pixels are
    added to ``pieces``. The driver passes ``engine`` to reduce such parcels from the
    pieces instead of reading.
    """
    if block is not None and pieces is None:
        raise ValueError("a block's query needs pieces= for its straddling parcels")
    t0 = _time.perf_counter() if started is None else started
    if deadline_at is None and request.deadline is not None:
        deadline_at = _time.monotonic() + request.deadline
    counters = handle.counters
    before = counters.snapshot()
    dates = select_dates(catalogue, request.outputs, request.time)
    classes = np.asarray(request.mask_classes, dtype=np.int64)
    frames: list[pd.DataFrame] = []
    n_chunks = 0
    status = parcel_status(pset)
    assignment = assign(pset, catalogue, request.outputs)
    warn_if_all_outside(pset, assignment, catalogue, stacklevel=4)
    jobs = []
    for a in assignment:
        info = catalogue.grids[a.grid]
        layers = [
            Layer(o.name, int(t), o.inputs, _formula(o, info))
            for o in a.outputs for t in dates[(a.grid, o.name)]
        ]
        if request.interval is not None and request.composite is not None:
            layers = composite_layers(layers, info.times, request.interval, request.composite)
        if not layers or a.subset.size == 0:
            continue
        geoms = pset.to_crs(info.spec.crs)[a.subset]
        big = too_large(geoms, info.spec)
        if big.any():  # not a real parcel (wrong units or CRS): nothing to read
            geoms = np.where(big, shapely.Polygon(), geoms)
            status[a.subset[big]] = "too large"
        plan = plan_chunks(geoms, info.spec, all_touched=request.all_touched,
                           coverage=request.coverage)
        spill = None
        if block is not None and a.grid == block.grid:
            plan, spill = _within_block(plan, block, a.subset)
        arrays = {b: band_array(root, a.grid, b).async_array
                  for o in a.outputs for b in o.inputs}
        n_chunks += plan.n_chunks * _reads_per_chunk(arrays, layers)
        mask = (None if request.mask_band is None
                else _mask_source(root, catalogue, info, request.mask_band, classes))
        weights = _weights(root, catalogue, info, request)
        jobs.append((info, a.subset, layers, GridJob(
            plan=plan, geoms=geoms, arrays=arrays,
            nodata={b: info.bands[b].nodata for b in arrays}, layers=layers,
            stats=request.stats, all_touched=request.all_touched,
            concurrency=request.concurrency or _config.default_concurrency(),
            coverage=request.coverage, categorical=request.categorical,
            workers=_config.default_workers(), mask=mask,
            footprints={(b, t): w for la in layers for b in la.inputs for t in la.time_indices
                        if (w := info.footprint_windows(b, t)) is not None},
            row_area=_row_areas(info) if request.categorical else None,
            deadline=request.deadline, deadline_at=deadline_at,
            min_coverage_frac=request.min_coverage_frac, weights=weights, spill=spill,
        )))
    names = request.stats.names
    bar = progress(total=n_chunks, desc="zonal_stats", unit="chunk", quiet=quiet)
    with bar:
        for info, subset, layers, job in jobs:
            if engine is not None:
                results = engine(info.name, job, subset)
            else:
                results = sync(run_grid(job, on_chunk=bar.update,
                                        on_spill=_collector(pieces, info.name, job, subset)))
            for lay, res in zip(layers, results, strict=True):
                when = lay.label if lay.label is not None else info.times[lay.time_index]
                if isinstance(res, ClassCounts):
                    frames.append(class_frame(pset, subset, lay.name, when, res))
                else:
                    frames.append(stat_frame(pset, subset, lay.name, when, res, names,
                                             status=status[subset]))
    if not request.categorical:
        frames.extend(uncovered_frames(pset, catalogue, assignment, request, dates,
                                       status=status))
    if block is not None:  # straddlers' rows come from the driver
        frames = [f[~block.straddle[f["_order"].to_numpy()]] for f in frames]
    df = concat(frames, pset, request.stat_names, integer_counts=not request.coverage,
                sort=["_order", "band", "time", "class"] if request.categorical else None)
    used = counters.snapshot() - before
    report = QueryReport(
        parcels=len(pset), rows=len(df), chunks=n_chunks,
        requests=used.get_requests, bytes_read=used.bytes_read,
        seconds=_time.perf_counter() - t0, grids=[a.grid for a in assignment],
        retries=used.retries,
    )
    df.attrs["parcelzarr"] = report.as_dict()
    logger.info("zonal_stats: %s", report)
    return df, report


def _within_block(plan: ChunkPlan, block: BlockLimit, subset: np.ndarray
                  ) -> tuple[ChunkPlan, np.ndarray]:
    """``plan`` cut to the block's chunks, and which of its parcels straddle the block."""
    inside = plan.within(block.window)
    spill = block.straddle[subset]
    if (inside.per_parcel[~spill] != plan.per_parcel[~spill]).any():
        raise RuntimeError(f"grid {block.grid}: parcels not marked as straddling reach beyond "
                           f"the block {block.window}")
    return inside, spill


def _collector(pieces: Pieces | None, grid: str, job: GridJob, subset: np.ndarray
               ) -> Callable[[int, list[Prepared]], None] | None:
    """``run_grid``'s ``on_spill``: the job's straddlers' pixels into ``pieces``."""
    if pieces is None or job.spill is None:
        return None
    chunks = job.plan.chunks

    def add(k: int, prepared: list[Prepared]) -> None:
        pieces.add(grid, (int(chunks[k, 0]), int(chunks[k, 1])), job.layers, prepared,
                   subset)

    return add


def _formula(out: Output, info: GridInfo
             ) -> Callable[[Mapping[str, np.ndarray]], np.ndarray] | None:
    """Per-pixel function of an index or expression output in reflectance; None for a band
    (even one named like an index)."""
    if out.is_band and out.name in info.bands:
        return None
    idx: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    if out.expression is not None:
        idx = out.expression
    elif out.name in INDICES:
        idx = INDICES[out.name].formula
    else:
        return None
    needs = out.inputs
    scales = {b: (info.bands[b].scale, info.bands[b].offset) for b in needs}

    def formula(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        refl = {b: arrays[b].astype(np.float64) * scales[b][0] + scales[b][1] for b in needs}
        return idx(refl)

    return formula


def _weights(root: zarr.Group, catalogue: Catalogue, info: GridInfo,
             request: ZonalRequest) -> WeightSource | None:
    """Where the grid ``info`` reads the request's weighting raster (None: unweighted)."""
    out = request.weights_band
    if out is None:
        return None
    formula = (out.expression if out.expression is not None
               else INDICES[out.name].formula if not out.is_band else None)
    return weight_source(root, catalogue, info, out.name, out.inputs, formula,
                         request.default_weight)


def mask_grid(catalogue: Catalogue, info: GridInfo, band: str
              ) -> tuple[GridInfo, int, tuple[int, int]]:
    """Where the grid ``info`` reads its mask ``band``: the grid of the same CRS holding it,
    finest first, whose pixels are whole multiples of ``info``'s on the same lattice; with
    the factor and the offset of band pixels into it (see :class:`._mask.MaskSource`)."""
    s = info.spec
    found = sorted((g for g in catalogue.grids.values()
                    if band in g.bands and g.spec.crs == s.crs),
                   key=lambda g: g.spec.res_x)
    for g in found:
        m = g.spec
        f = m.res_x / s.res_x
        oy = (m.y0 - s.y0) / s.res_y
        ox = (s.x0 - m.x0) / s.res_x
        if all(abs(v - round(v)) < 1e-6 for v in (f, oy, ox)) and round(f) >= 1:
            return g, round(f), (round(oy), round(ox))
    raise BandNotFoundError(
        f"no {band} grid of {s.crs.to_string()} aligns with grid {info.name}: the mask "
        "needs a resolution that is a whole multiple of the band's on the same lattice")


def _mask_source(root: zarr.Group, catalogue: Catalogue, info: GridInfo, band: str,
                 classes: np.ndarray) -> MaskSource:
    """The mask of grid ``info``: :func:`mask_grid`'s grid, array and alignment."""
    g, f, offset = mask_grid(catalogue, info, band)
    tmap = np.array([_index_of(g.times, t) for t in info.times], dtype=np.int64)
    return MaskSource(band_array(root, g.name, band).async_array, f, offset, tmap, classes)


def _row_areas(info: GridInfo) -> np.ndarray:
    """Ground area (m²) of a pixel per row of the grid, with a warning for projections
    whose map areas are far from ground areas (Web Mercator)."""
    scale = areal_scale(info.spec)
    if abs(scale - 1.0) > 0.01:
        warnings.warn(
            f"grid {info.name} is in {info.spec.crs.name}, whose map areas are {scale:.3g} "
            "times ground areas at its centre: area_m2 is the map-plane area there; ingest "
            "the layer in an equal-area or UTM CRS for ground areas", UserWarning, stacklevel=5)
    return row_areas(info.spec)


def _index_of(times: np.ndarray, t: np.datetime64) -> int:
    hit = np.flatnonzero(times == t)
    return int(hit[0]) if hit.size else -1


def _reads_per_chunk(arrays: Mapping[str, Any], layers: Sequence[Layer]) -> int:
    """Zarr chunks read per spatial chunk: per band, one per time block holding a date."""
    total = 0
    for band, arr in arrays.items():
        ts = {t for la in layers if band in la.inputs for t in la.time_indices}
        total += len({t // arr.chunks[0] for t in ts})
    return total
