"""Scale-out: the same query partitioned over a Dask distributed cluster.

Parcels are grouped into blocks of the chunk lattice of the grid that reads them (the local
query's rule, :func:`._assign.assign`), one task per block, blocks sized from the plan to
about ``PARCELZARR_TASK_SECONDS`` of work (:mod:`._blocks`). Each task opens the store in its
worker and runs the ordinary single-process execution (:func:`._zonal.run_zonal`) with the
same :class:`._request.ZonalRequest`, reading only the chunks of its block: parcels wholly
inside are reduced there; parcels straddling the block's edge come back as prepared pixels,
and the driver reduces each from the pieces of every block it touches with the engine's own
reduction (:mod:`._straddle`). No chunk is read by two tasks, and the rows, in input order,
are those of the single-process run, bit for bit.

A parcel whose outputs are read from two grids (a band only another grid holds) makes tasks
take whole parcels (a straddler reads its neighbours' chunks). A mask or weights
(``weights_band``) grid whose chunks cannot be aligned with the blocks (a 60 m grid under 10 m
bands) keeps the blocks: only its chunks may be fetched by more than one task (logged; the
report counts every fetch)."""

from __future__ import annotations

import dataclasses
import logging
import time as _time
from collections.abc import Mapping
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import zarr
from parcelzarr.stores import StoreHandle, open_store_handle

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue, GridInfo, open_catalogue
from parcelzarr._snapshot import snapshot_of
from parcelzarr.errors import ParcelzarrError

from ._assign import Assignment, assign
from ._blocks import BlockTask, partition_parcels
from ._parcels import ParcelSet, load_parcels
from ._report import QueryReport
from ._request import ZonalRequest
from ._snapshot import same_version
from ._straddle import BlockLimit, Pieces, merge_pieces, replay_engine
from ._weights import weights_grid
from ._zonal import mask_grid, run_zonal

__all__ = ["distributed_zonal_stats", "spatial_order", "task_parts"]

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


def _grids(pset: ParcelSet, assignment: list[Assignment]) -> tuple[np.ndarray, bool]:
    """Each parcel's grid (its name, "" for none: the first output's that has one, as
    :func:`._assign.grid_of_parcels`) and whether every parcel is read from one grid only."""
    grid = np.full(len(pset), "", dtype=object)
    one = True
    for a in assignment:
        seen = grid[a.subset]
        one &= bool(((seen == "") | (seen == a.grid)).all())
        grid[a.subset[seen == ""]] = a.grid
    return grid, one


def _mask_edges(catalogue: Catalogue, request: ZonalRequest
                ) -> tuple[dict[str, tuple[int, tuple[int, int]]], bool]:
    """Per grid, the smallest block edge (a power of two, in chunks) and the shift of the
    block lattice (:func:`._blocks.block_tasks`) with which blocks never share a chunk of
    the grid's mask or weighting raster (``weights_band``) read from a coarser grid (a 20 m
    SCL chunk covers 2 x 2 chunks of 10 m bands, on a lattice of its own); and whether every
    grid's coarser chunks can be aligned so (their edges fall on the grid's chunk edges, and
    the mask's and the weights' lattices agree)."""
    edges: dict[str, tuple[int, tuple[int, int]]] = {}
    wb = request.weights_band
    if request.mask_band is None and wb is None:
        return edges, True
    aligned = True
    for name, info in catalogue.grids.items():
        sources = []
        try:
            if request.mask_band is not None:
                sources.append(mask_grid(catalogue, info, request.mask_band))
            if wb is not None:
                sources.append(weights_grid(catalogue, info, wb.name, wb.inputs))
        except ParcelzarrError:
            continue  # the query itself says so, for grids it reads
        found = _coarse_lattice(info, sources)
        if found is None:
            aligned = False  # align the blocks on what can be (a mask, under 60 m weights)
            fits = [f for src in sources if (f := _coarse_lattice(info, [src])) is not None]
            found = max(fits, default=None)
        if found is not None and found[0] > 1:
            edges[name] = found
    return edges, aligned


def _coarse_lattice(info: GridInfo, sources: list[tuple[GridInfo, int, tuple[int, int]]]
                    ) -> tuple[int, tuple[int, int]] | None:
    """The smallest block edge and shift (see :func:`_mask_edges`) whose blocks hold whole
    chunks of every coarser grid in ``sources`` (grid, factor, offset of ``info``'s pixels
    into it); None if there is none."""
    chunk = (info.spec.chunk_y, info.spec.chunk_x)
    per: list[int] = [1, 1]  # chunks per coarser chunk, the largest (powers of two)
    shift: list[int] = [0, 0]
    for m, f, offset in sources:
        span = (m.spec.chunk_y * f, m.spec.chunk_x * f)  # band pixels per coarser chunk
        for axis in (0, 1):
            s, c, o = span[axis], chunk[axis], offset[axis]
            if s % c or o % c:
                return None
            # band row r reads coarser row (r + o) // f: its chunk ends where r + o is a
            # multiple of the span; blocks of e chunks shifted by k end at (i e - k) chunks
            p, k = s // c, (o // c) % (s // c)
            if p & (p - 1) or p > 1 << 16:
                return None  # no power-of-two edge is a multiple of it
            small, big = sorted([(per[axis], shift[axis]), (p, k)])
            if big[1] % small[0] != small[1]:
                return None  # two lattices no block lattice fits
            per[axis], shift[axis] = big
    return max(per), (shift[0], shift[1])


def task_parts(catalogue: Catalogue, pset: ParcelSet, request: ZonalRequest, *,
               min_tasks: int) -> tuple[list[BlockTask], dict[str, int], bool]:
    """Tasks: blocks of each grid's chunk lattice sized to ``PARCELZARR_TASK_SECONDS`` of work
    (:mod:`._blocks`); a spatial chunk costs ``PARCELZARR_CHUNK_SECONDS`` per output and date
    of its grid. Returns the tasks, each grid's block edge, and whether straddlers are
    reduced by the driver (else tasks take whole parcels, see the module's docstring)."""
    names = sorted(catalogue.grids)
    grid_of, one_grid = _grids(pset, assign(pset, catalogue, request.outputs))
    min_edge, aligned = _mask_edges(catalogue, request)
    straddle = one_grid
    index = np.full(len(pset), -1, dtype=np.int64)
    by_grid: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        sel = grid_of == name
        index[sel] = i
        if sel.any():
            by_grid[name] = pset.to_crs(catalogue.grids[name].spec.crs)
    specs = {g: catalogue.grids[g].spec for g in names}
    n_outputs = len(request.outputs)
    per_chunk = {g: _config.chunk_seconds() * max(1, n_outputs)
                 * max(1, catalogue.grids[g].times.size) for g in names}
    parts, edges = partition_parcels(specs, by_grid, index, seconds_per_chunk=per_chunk,
                                     target_s=_config.task_seconds(), min_tasks=min_tasks,
                                     straddle=straddle, min_edge=min_edge)
    logger.info("dask: %d tasks (block edges in chunks: %s; straddlers %s)", len(parts), edges,
                "reduced by the driver" if straddle else "read whole by one task")
    if not aligned:
        logger.info("dask: the chunks of the coarser mask or weights grid do not fall on the "
                    "blocks' chunk edges: some of them are fetched by more than one task")
    return parts, edges, straddle


def _run_part(url: str, storage_options: Mapping[str, Any] | None, request: ZonalRequest,
              part: gpd.GeoDataFrame, id_column: str, version: int | None = None,
              block: BlockLimit | None = None, unusable: np.ndarray | None = None
              ) -> tuple[pd.DataFrame, QueryReport, Pieces]:
    """One partition, in a worker: open the store there and run the request (on the
    driver's ``version``: :class:`SnapshotMoved` if the store is at another one), reading
    only ``block``'s chunks; the straddlers' prepared pixels come back as pieces.
    ``unusable``: the driver's :attr:`ParcelSet.unusable` of the part's parcels."""
    t0 = _time.perf_counter()
    handle = open_store_handle(url, storage_options, read_only=True)
    try:
        handle.check_reachable()
        root, catalogue = open_catalogue(handle.store, handle.url)
        if version is not None:
            same_version(version, [snapshot_of(root.attrs).version])
        pset = _with_unusable(load_parcels(part, id_column=id_column), unusable)
        pieces = Pieces()
        df, report = run_zonal(handle, root, catalogue, request, pset, started=t0,
                               block=block, pieces=pieces if block is not None else None)
        return df, report, pieces
    finally:
        handle.close()


def distributed_zonal_stats(url: str, storage_options: Mapping[str, Any] | None,
                            catalogue: Catalogue, request: ZonalRequest, pset: ParcelSet, *,
                            scheduler: Any, handle: StoreHandle, root: zarr.Group,
                            started: float | None = None,
                            version: int | None = None) -> tuple[pd.DataFrame, QueryReport]:
    """``request`` for ``pset`` over a Dask cluster (``scheduler``: a Client or an address),
    on the store at ``url`` whose catalogue is ``catalogue`` (opened here as ``handle`` and
    ``root``: the straddlers are reduced against them, reading nothing); the rows in input
    order and what the whole query cost (``started``: ``time.perf_counter()`` when the call
    began). ``version``: the committed version the caller pinned; every worker must read it.
    """
    from distributed import Client

    if url.startswith("memory://"):
        raise ParcelzarrError("a memory:// store lives in this process only: use a local "
                              "directory or az:// store with scheduler=")
    t0 = _time.perf_counter() if started is None else started
    if len(pset) == 0:  # no task: the single run's empty frame, reading nothing
        return run_zonal(handle, root, catalogue, request, pset, started=t0)
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        name = pset.ids.name
        n = len(pset)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        parts, _, _ = task_parts(catalogue, pset, request, min_tasks=2 * workers)
        frame = gpd.GeoDataFrame({name: pset.ids.to_numpy()}, geometry=pset.geometry,
                                 crs=pset.crs)
        options = dict(storage_options) if storage_options else None
        futures = [client.submit(_run_part, url, options, request, frame.iloc[t.parcels],
                                 name, version, _limit(t), _part_of(pset.unusable, t.parcels),
                                 pure=False)
                   for t in parts]
        results: list[tuple[pd.DataFrame, QueryReport, Pieces]] = client.gather(futures)
    finally:
        if own:
            client.close()
    frames = [r[0] for r in results]
    reps = [r[1] for r in results]
    straddlers = np.unique(np.concatenate(
        [t.parcels[t.straddle] for t in parts if t.straddle is not None] + [np.empty(0, int)]))
    if straddlers.size:
        t1 = _time.perf_counter()
        pieces = merge_pieces(r[2].renumbered(t.parcels) for t, r in zip(parts, results,
                                                                          strict=True))
        sub = _with_unusable(load_parcels(frame.iloc[straddlers], id_column=cast(str, name)),
                             _part_of(pset.unusable, straddlers))
        df_s, rep_s = run_zonal(handle, root, catalogue, request, sub,
                                engine=replay_engine(pieces, straddlers, n))
        logger.info("dask: %d straddlers reduced by the driver from %.1f MB of pieces in "
                    "%.2f s", straddlers.size, pieces.nbytes / 1e6, _time.perf_counter() - t1)
        frames.append(df_s)
        reps.append(QueryReport(0, 0, 0, rep_s.requests, rep_s.bytes_read, 0.0,
                                rep_s.grids, rep_s.retries))
    # a task without rows has an empty frame whose columns have no dtypes to keep
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    pos = pd.Series(np.arange(n), index=pset.ids.to_numpy())
    df["_pos"] = pos.loc[df[name].to_numpy()].to_numpy()
    df = df.sort_values("_pos", kind="stable").drop(columns="_pos").reset_index(drop=True)
    report = QueryReport(
        parcels=n, rows=len(df), chunks=sum(r.chunks for r in reps),
        requests=sum(r.requests for r in reps), bytes_read=sum(r.bytes_read for r in reps),
        seconds=_time.perf_counter() - t0, grids=sorted({g for r in reps for g in r.grids}),
        retries=sum(r.retries for r in reps),
    )
    df.attrs["parcelzarr"] = report.as_dict()
    return df, report


def _part_of(unusable: np.ndarray | None, positions: np.ndarray) -> np.ndarray | None:
    """The unusable flags of the parcels at ``positions`` (None: none is)."""
    if unusable is None or not unusable[positions].any():
        return None
    return unusable[positions]


def _with_unusable(pset: ParcelSet, unusable: np.ndarray | None) -> ParcelSet:
    """``pset`` with the driver's unusable flags: a geometry beyond repair reaches a task as
    the empty polygon that replaced it, which alone would say "empty"."""
    if unusable is None:
        return pset
    return dataclasses.replace(pset, unusable=unusable)


def _limit(task: BlockTask) -> BlockLimit | None:
    """What the task may read (None: all its parcels need)."""
    if task.window is None or task.straddle is None:
        return None
    return BlockLimit(task.grid, task.window, task.straddle)
