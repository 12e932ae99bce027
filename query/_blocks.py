"""Dask partitions (pure): spatial blocks aligned to the chunk lattice, sized by the plan.

A block is ``edge x edge`` chunks of one grid's lattice; each parcel belongs to the block
holding its first (top-left) chunk, and one block is one task. Block edges therefore never cut
a chunk, and a chunk is read by a second task only when a parcel of the neighbouring block
reaches into it (parcels straddling a block edge); :func:`chunk_reads` counts those. The edge
is chosen from the plan so that a task holds about ``target_s`` seconds of work (chunks x
reads per chunk x seconds per chunk read), not a number of parcels: a state is a few thousand
tasks, a county a handful.
"""

from __future__ import annotations

import numpy as np
import shapely

from parcelzarr._grid import GridSpec

__all__ = ["block_edge", "block_parts", "chunk_ranges", "chunk_reads", "partition_parcels"]


def chunk_ranges(bounds: np.ndarray, spec: GridSpec) -> np.ndarray:
    """``(n, 4)`` inclusive chunk ranges ``cy0, cy1, cx0, cx1`` of ``(n, 4)`` bounds in the
    grid's CRS; rows of -1 for parcels that cover no pixel of the grid."""
    from ._plan import _pixel_windows

    win = _pixel_windows(bounds, spec)
    ok = (win[:, 1] > win[:, 0]) & (win[:, 3] > win[:, 2]) & np.isfinite(bounds).all(axis=1)
    out = np.stack([win[:, 0] // spec.chunk_y, (win[:, 1] - 1) // spec.chunk_y,
                    win[:, 2] // spec.chunk_x, (win[:, 3] - 1) // spec.chunk_x], axis=1)
    out[~ok] = -1
    return out


def _cells(ranges: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(parcel index, chunk key ``cy * n_cols + cx``) of every chunk each parcel touches."""
    ok = ranges[:, 0] >= 0
    ny = np.where(ok, ranges[:, 1] - ranges[:, 0] + 1, 0)
    nx = np.where(ok, ranges[:, 3] - ranges[:, 2] + 1, 0)
    per = ny * nx
    pid = np.repeat(np.arange(len(ranges)), per)
    offs = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    nxr = np.maximum(np.repeat(nx, per), 1)
    cy = np.repeat(ranges[:, 0], per) + offs // nxr
    cx = np.repeat(ranges[:, 2], per) + offs % nxr
    return pid, cy * n_cols + cx


def block_edge(ranges: np.ndarray, n_cols: int, *, seconds_per_chunk: float, target_s: float,
               min_tasks: int = 1) -> int:
    """Block edge in chunks so a task holds about ``target_s`` seconds of work:
    ``seconds_per_chunk`` is the cost of one spatial chunk (all its bands and dates).

    The largest power of two whose blocks hold, on average over the blocks with parcels, at
    most ``target_s`` of needed chunks (counted, so clustered parcels get the blocks their
    clusters need), and that still gives ``min_tasks`` blocks with parcels.
    """
    _, keys = _cells(ranges, n_cols)
    keys = np.unique(keys)
    if keys.size == 0:
        return 1
    cy, cx = keys // n_cols, keys % n_cols
    per_task = max(1.0, target_s / max(seconds_per_chunk, 1e-12))
    first = ranges[ranges[:, 0] >= 0]
    span = int(max(cy.max() - cy.min(), cx.max() - cx.min())) + 1
    edge = 1
    while edge < span:
        e = edge * 2
        width = n_cols // e + 1
        _, counts = np.unique((cy // e) * width + cx // e, return_counts=True)
        starts = np.unique((first[:, 0] // e) * width + first[:, 2] // e)
        if counts.mean() > per_task or starts.size < min_tasks:
            break
        edge = e
    return edge


def block_parts(ranges: np.ndarray, n_cols: int, edge: int) -> list[np.ndarray]:
    """Parcel positions per task: one task per block of ``edge`` chunks holding parcels, in
    row-major block order; parcels without chunks (-1 rows) are left out."""
    ok = np.flatnonzero(ranges[:, 0] >= 0)
    if ok.size == 0:
        return []
    block = (ranges[ok, 0] // edge) * (n_cols // edge + 1) + ranges[ok, 2] // edge
    order = np.argsort(block, kind="stable")
    block, pos = block[order], ok[order]
    cuts = np.flatnonzero(np.diff(block)) + 1
    return list(np.split(pos, cuts))


def chunk_reads(parts: list[np.ndarray], ranges: np.ndarray, n_cols: int) -> tuple[int, int]:
    """(spatial chunk reads over all tasks, distinct chunks): a task reads every chunk its
    parcels touch once; the difference is what is read twice."""
    total = 0
    seen: list[np.ndarray] = []
    for p in parts:
        _, keys = _cells(ranges[p], n_cols)
        u = np.unique(keys)
        total += int(u.size)
        seen.append(u)
    distinct = int(np.unique(np.concatenate(seen)).size) if seen else 0
    return total, distinct


def partition_parcels(specs: dict[str, GridSpec], geoms_by_grid: dict[str, np.ndarray],
                      grid_of: np.ndarray, *, seconds_per_chunk: dict[str, float],
                      target_s: float, min_tasks: int) -> tuple[list[np.ndarray], dict[str, int]]:
    """Tasks (parcel positions) over every grid: each grid's parcels (``grid_of`` = the
    grid's position in ``sorted(specs)``) in lattice-aligned blocks sized by
    :func:`block_edge`; parcels on no grid form one more task (they read nothing).
    Returns the tasks and each grid's block edge."""
    parts: list[np.ndarray] = []
    edges: dict[str, int] = {}
    names = sorted(specs)
    share = max(1, min_tasks // max(1, int(np.unique(grid_of[grid_of >= 0]).size)))
    for gi, name in enumerate(names):
        sel = np.flatnonzero(grid_of == gi)
        if sel.size == 0:
            continue
        spec = specs[name]
        ranges = chunk_ranges(shapely.bounds(geoms_by_grid[name][sel]), spec)
        n_cols = spec.chunk_counts[1]
        edge = block_edge(ranges, n_cols, seconds_per_chunk=seconds_per_chunk[name],
                          target_s=target_s, min_tasks=share)
        edges[name] = edge
        grid_parts = block_parts(ranges, n_cols, edge)
        parts += [sel[p] for p in grid_parts]
        nothing = sel[ranges[:, 0] < 0]
        if nothing.size:
            parts.append(nothing)
    rest = np.flatnonzero(grid_of < 0)
    if rest.size:
        parts.append(rest)
    return parts, edges
