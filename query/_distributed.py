"""Scale-out: the same query partitioned over a Dask distributed cluster.

Parcels are grouped into spatial blocks aligned to the chunk lattice of the grid that covers
them, one task per block, blocks sized from the plan to about ``PARCELZARR_TASK_SECONDS`` of work
(:mod:`._blocks`): no block edge cuts a chunk, so a chunk is read by two tasks only where a
parcel straddles a block edge. Each partition runs the ordinary
single-process engine in a worker on a store opened there; the results are concatenated in the
input order. A parcel's statistics depend only on its own pixels, so the result is identical
to the single-process run.
"""

from __future__ import annotations

import logging
import time as _time
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from parcelzarr import _config
from parcelzarr.errors import ParcelzarrError

from ._blocks import partition_parcels
from ._parcels import load_parcels

if TYPE_CHECKING:
    from ._store import ParcelStore

__all__ = ["distributed_zonal_stats", "spatial_order"]

_BLOCK = 8  # chunks per block edge

logger = logging.getLogger(__name__)


def spatial_order(store: ParcelStore, geoms_by_grid: dict[str, np.ndarray],
                  grid_of: np.ndarray) -> np.ndarray:
    """Parcel positions sorted by (grid, block row, block col, chunk row, chunk col)."""
    n = grid_of.size
    keys = np.zeros((n, 5), dtype=np.int64)
    names = sorted(store.grids)
    for gi, name in enumerate(names):
        sel = np.flatnonzero(grid_of == gi)
        if sel.size == 0:
            continue
        s = store.grids[name].spec
        pts = shapely.point_on_surface(geoms_by_grid[name][sel])
        x = np.nan_to_num(shapely.get_x(pts))
        y = np.nan_to_num(shapely.get_y(pts))
        cy = np.floor((s.y0 - y) / s.res_y / s.chunk_y).astype(np.int64)
        cx = np.floor((x - s.x0) / s.res_x / s.chunk_x).astype(np.int64)
        keys[sel] = np.stack([np.full(sel.size, gi), cy // _BLOCK, cx // _BLOCK, cy, cx], 1)
    keys[grid_of < 0, 0] = len(names)
    return np.lexsort(keys.T[::-1])


def _task_parts(store: ParcelStore, by_grid: dict[str, np.ndarray], grid_of: np.ndarray, *,
                min_tasks: int) -> list[np.ndarray]:
    """Lattice-aligned blocks sized to ``PARCELZARR_TASK_SECONDS`` of work each
    (:mod:`._blocks`); a spatial chunk costs ``PARCELZARR_CHUNK_SECONDS`` per band and date."""
    specs = {g: store.grids[g].spec for g in store.grids}
    per_chunk = {g: _config.chunk_seconds() * max(1, len(info.bands)) * max(1, info.times.size)
                 for g, info in store.grids.items()}
    parts, edges = partition_parcels(specs, by_grid, grid_of, seconds_per_chunk=per_chunk,
                                     target_s=_config.task_seconds(), min_tasks=min_tasks)
    logger.info("dask: %d tasks (block edges in chunks: %s)", len(parts), edges)
    return parts


def _run_part(url: str, storage_options: dict[str, Any] | None, part: gpd.GeoDataFrame,
              id_column: str, kwargs: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    from ._store import open_store

    with open_store(url, storage_options=storage_options) as store:
        df = store.zonal_stats(part, id_column=id_column, **kwargs)
    return df, dict(df.attrs.get("parcelzarr", {}))


def distributed_zonal_stats(store: ParcelStore, parcels: Any, *, scheduler: Any,
                            id_column: str | None, crs: Any, layer: str | None = None,
                            **kwargs: Any) -> pd.DataFrame:
    """:meth:`ParcelStore.zonal_stats` over a Dask cluster (``scheduler``: a Client or an
    address). Keyword arguments are those of ``zonal_stats``."""
    from distributed import Client

    from ._store import QueryReport

    if store.url.startswith("memory://"):
        raise ParcelzarrError("a memory:// store lives in this process only: use a local "
                              "directory or az:// store with scheduler=")
    t0 = _time.perf_counter()
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        pset = load_parcels(parcels, crs=crs, id_column=id_column, layer=layer)
        name = pset.ids.name
        n = len(pset)
        # the grid whose bounds hold each parcel's representative point (else -1)
        names = sorted(store.grids)
        grid_of = np.full(n, -1, dtype=np.int64)
        by_grid = {}
        for gi, g in enumerate(names):
            geoms = pset.to_crs(store.grids[g].spec.crs)
            by_grid[g] = geoms
            left, bottom, right, top = store.grids[g].spec.bounds
            b = shapely.bounds(geoms)
            inside = (grid_of < 0) & (b[:, 2] > left) & (b[:, 0] < right) & (
                b[:, 3] > bottom) & (b[:, 1] < top)
            grid_of[inside] = gi
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        parts = _task_parts(store, by_grid, grid_of, min_tasks=2 * workers)
        frame = gpd.GeoDataFrame({name: pset.ids.to_numpy()}, geometry=pset.geometry,
                                 crs=pset.crs)
        futures = [client.submit(_run_part, store.url, store.storage_options,
                                 frame.iloc[np.sort(p)], name, kwargs, pure=False)
                   for p in parts]
        results = client.gather(futures)
    finally:
        if own:
            client.close()
    df = pd.concat([r[0] for r in results], ignore_index=True)
    pos = pd.Series(np.arange(n), index=pset.ids.to_numpy())
    df["_pos"] = pos.loc[df[name].to_numpy()].to_numpy()
    df = df.sort_values("_pos", kind="stable").drop(columns="_pos").reset_index(drop=True)
    reps = [r[1] for r in results]
    report = QueryReport(
        parcels=n, rows=len(df), chunks=sum(r.get("chunks", 0) for r in reps),
        requests=sum(r.get("requests", 0) for r in reps),
        bytes_read=sum(r.get("bytes_read", 0) for r in reps),
        seconds=_time.perf_counter() - t0,
        grids=sorted({g for r in reps for g in r.get("grids", [])}),
        retries=sum(r.get("retries", 0) for r in reps),
    )
    store.last_report = report
    df.attrs["parcelzarr"] = report.as_dict()
    return df
