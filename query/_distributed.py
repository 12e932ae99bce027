"""Scale-out: the same query partitioned over a Dask distributed cluster.

Parcels are grouped into blocks of the chunk lattice of the grid that reads them (the local
query's rule, :func:`._assign.grid_of_parcels`), one task per block, blocks sized from the plan
to about ``PARCELZARR_TASK_SECONDS`` of work (:mod:`._blocks`): no block edge cuts a chunk, so
a chunk is read by two tasks only where a parcel straddles a block edge. Each task runs the
ordinary single-process execution
(:func:`._zonal.run_zonal`) in a worker on the store opened there, with the same
:class:`._request.ZonalRequest`; the results are concatenated in the input order. A parcel's
statistics depend only on its own pixels, so the result is identical to the single-process
run.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from parcelzarr.stores import open_store_handle

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue, open_catalogue
from parcelzarr._snapshot import snapshot_of
from parcelzarr.errors import ParcelzarrError

from ._assign import grid_of_parcels
from ._blocks import partition_parcels
from ._parcels import ParcelSet, load_parcels
from ._report import QueryReport
from ._request import ZonalRequest
from ._snapshot import same_version
from ._zonal import run_zonal

__all__ = ["distributed_zonal_stats", "spatial_order"]

_BLOCK = 8  # chunks per block edge (spatial_order)

logger = logging.getLogger(__name__)


def spatial_order(catalogue: Catalogue, pset: ParcelSet, grid_of: np.ndarray) -> np.ndarray:
    """Parcel positions sorted by (grid, block row, block col, chunk row, chunk col);
    ``grid_of`` names each parcel's grid ("" for none: those go last)."""
    keys = np.zeros((len(pset), 5), dtype=np.int64)
    names = sorted(catalogue.grids)
    for gi, name in enumerate(names):
        sel = np.flatnonzero(grid_of == name)
        if sel.size == 0:
            continue
        s = catalogue.grids[name].spec
        pts = shapely.point_on_surface(pset.to_crs(s.crs)[sel])
        x = np.nan_to_num(shapely.get_x(pts))
        y = np.nan_to_num(shapely.get_y(pts))
        cy = np.floor((s.y0 - y) / s.res_y / s.chunk_y).astype(np.int64)
        cx = np.floor((x - s.x0) / s.res_x / s.chunk_x).astype(np.int64)
        keys[sel] = np.stack([np.full(sel.size, gi), cy // _BLOCK, cx // _BLOCK, cy, cx], 1)
    keys[grid_of == "", 0] = len(names)
    return np.lexsort(keys.T[::-1])


def _task_parts(catalogue: Catalogue, pset: ParcelSet, grid_of: np.ndarray, *,
                n_outputs: int, min_tasks: int) -> list[np.ndarray]:
    """Tasks: blocks of each grid's chunk lattice sized to ``PARCELZARR_TASK_SECONDS`` of work
    (:mod:`._blocks`); a spatial chunk costs ``PARCELZARR_CHUNK_SECONDS`` per output and date
    of its grid. ``grid_of`` names each parcel's grid ("" for none)."""
    names = sorted(catalogue.grids)
    index = np.full(len(pset), -1, dtype=np.int64)
    by_grid: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        sel = grid_of == name
        index[sel] = i
        if sel.any():
            by_grid[name] = pset.to_crs(catalogue.grids[name].spec.crs)
    specs = {g: catalogue.grids[g].spec for g in names}
    per_chunk = {g: _config.chunk_seconds() * max(1, n_outputs)
                 * max(1, catalogue.grids[g].times.size) for g in names}
    parts, edges = partition_parcels(specs, by_grid, index, seconds_per_chunk=per_chunk,
                                     target_s=_config.task_seconds(), min_tasks=min_tasks)
    logger.info("dask: %d tasks (block edges in chunks: %s)", len(parts), edges)
    return parts


def _run_part(url: str, storage_options: Mapping[str, Any] | None, request: ZonalRequest,
              part: gpd.GeoDataFrame, id_column: str,
              version: int | None = None) -> tuple[pd.DataFrame, QueryReport]:
    """One partition, in a worker: open the store there and run the request (on the
    driver's ``version``: :class:`SnapshotMoved` if the store is at another one)."""
    t0 = _time.perf_counter()
    handle = open_store_handle(url, storage_options, read_only=True)
    try:
        handle.check_reachable()
        root, catalogue = open_catalogue(handle.store, handle.url)
        if version is not None:
            same_version(version, [snapshot_of(root.attrs).version])
        pset = load_parcels(part, id_column=id_column)
        return run_zonal(handle, root, catalogue, request, pset, started=t0)
    finally:
        handle.close()


def distributed_zonal_stats(url: str, storage_options: Mapping[str, Any] | None,
                            catalogue: Catalogue, request: ZonalRequest, pset: ParcelSet, *,
                            scheduler: Any, started: float | None = None,
                            version: int | None = None) -> tuple[pd.DataFrame, QueryReport]:
    """``request`` for ``pset`` over a Dask cluster (``scheduler``: a Client or an address),
    on the store at ``url`` whose catalogue is ``catalogue``; the rows in input order and
    what the whole query cost (``started``: ``time.perf_counter()`` when the call began).
    ``version``: the committed version the caller pinned; every worker must read it."""
    from distributed import Client

    if url.startswith("memory://"):
        raise ParcelzarrError("a memory:// store lives in this process only: use a local "
                              "directory or az:// store with scheduler=")
    t0 = _time.perf_counter() if started is None else started
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        name = pset.ids.name
        n = len(pset)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        parts = _task_parts(catalogue, pset, grid_of_parcels(pset, catalogue, request.outputs),
                            n_outputs=len(request.outputs), min_tasks=2 * workers)
        frame = gpd.GeoDataFrame({name: pset.ids.to_numpy()}, geometry=pset.geometry,
                                 crs=pset.crs)
        options = dict(storage_options) if storage_options else None
        futures = [client.submit(_run_part, url, options, request, frame.iloc[np.sort(p)],
                                 name, version, pure=False)
                   for p in parts]
        results: list[tuple[pd.DataFrame, QueryReport]] = client.gather(futures)
    finally:
        if own:
            client.close()
    df = pd.concat([r[0] for r in results], ignore_index=True)
    pos = pd.Series(np.arange(n), index=pset.ids.to_numpy())
    df["_pos"] = pos.loc[df[name].to_numpy()].to_numpy()
    df = df.sort_values("_pos", kind="stable").drop(columns="_pos").reset_index(drop=True)
    reps = [r[1] for r in results]
    report = QueryReport(
        parcels=n, rows=len(df), chunks=sum(r.chunks for r in reps),
        requests=sum(r.requests for r in reps), bytes_read=sum(r.bytes_read for r in reps),
        seconds=_time.perf_counter() - t0, grids=sorted({g for r in reps for g in r.grids}),
        retries=sum(r.retries for r in reps),
    )
    df.attrs["parcelzarr"] = report.as_dict()
    return df, report
