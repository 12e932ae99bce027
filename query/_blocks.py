"""Dask partitions (pure): spatial blocks aligned to the chunk lattice, sized by the plan.

A block is ``edge x edge`` chunks of one grid's lattice and one task, which reads the chunks
of its block only (:class:`BlockTask`). Its parcels are those wholly inside it, reduced there,
and those straddling its edge (touching it and another block): the task hands over their
prepared pixels in the block, reduced by the driver (:mod:`._straddle`). Block edges never
cut a chunk, so no chunk is read by two tasks; :func:`chunk_reads` counts the reads. The edge
is chosen from the plan so that a task holds about ``target_s`` seconds of work (chunks x
reads per chunk x seconds per chunk read), not a number of parcels: a state is a few thousand
tasks, a county a handful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from parcelzarr._grid import GridSpec

from ._rasterize import too_large

__all__ = ["BlockTask", "block_edge", "block_parts", "block_tasks", "chunk_ranges",
           "chunk_reads", "partition_parcels"]


@dataclass(frozen=True)
class BlockTask:
    """One Dask task: parcel positions ``parcels`` (ascending) of grid ``grid``, reading
    only the chunks in ``window`` (chunk rows ``cy0:cy1``, columns ``cx0:cx1``); ``straddle``
    marks the parcels reaching beyond it. ``window`` None: the task reads what its parcels
    need (parcels on no grid, which read nothing)."""

    grid: str
    parcels: np.ndarray
    window: tuple[int, int, int, int] | None = None
    straddle: np.ndarray | None = None


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


def block_tasks(ranges: np.ndarray, n_cols: int, edge: int, grid: str = "",
                shift: tuple[int, int] = (0, 0)) -> list[BlockTask]:
    """One task per block of ``edge`` chunks that some parcel touches, in row-major block
    order: the parcels touching it (positions into ``ranges``), straddlers marked; parcels
    without chunks (-1 rows) are left out. ``shift`` (rows, columns, in chunks) moves the
    block lattice: block ``(i, j)`` starts at chunk ``(i * edge - shift[0], j * edge -
    shift[1])`` (blocks that must fit another lattice, a coarser mask grid's)."""
    ok = np.flatnonzero(ranges[:, 0] >= 0)
    if ok.size == 0:
        return []
    sy, sx = shift
    b = (ranges[ok] + np.array([sy, sy, sx, sx])) // edge  # block ranges: by0, by1, bx0, bx1
    width = (n_cols + sx) // edge + 1
    pid, keys = _cells(b, width)
    pos = ok[pid]
    straddle = ((b[:, 1] > b[:, 0]) | (b[:, 3] > b[:, 2]))[pid]
    order = np.lexsort((pos, keys))
    keys, pos, straddle = keys[order], pos[order], straddle[order]
    cuts = np.flatnonzero(np.diff(keys)) + 1
    out = []
    for k, p, s in zip(np.split(keys, cuts), np.split(pos, cuts), np.split(straddle, cuts),
                       strict=True):
        by, bx = divmod(int(k[0]), width)
        out.append(BlockTask(grid, p, (by * edge - sy, (by + 1) * edge - sy, bx * edge - sx,
                                       (bx + 1) * edge - sx), s))
    return out


def chunk_reads(parts: list[np.ndarray] | list[BlockTask], ranges: np.ndarray, n_cols: int
                ) -> tuple[int, int]:
    """(spatial chunk reads over all tasks, distinct chunks): a task reads once every chunk
    its parcels touch (inside its window, for a :class:`BlockTask` with one); the
    difference is what is read twice."""
    total = 0
    seen: list[np.ndarray] = []
    for part in parts:
        p = part.parcels if isinstance(part, BlockTask) else part
        _, keys = _cells(ranges[p], n_cols)
        if isinstance(part, BlockTask) and part.window is not None:
            cy0, cy1, cx0, cx1 = part.window
            cy, cx = keys // n_cols, keys % n_cols
            keys = keys[(cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1)]
        u = np.unique(keys)
        total += int(u.size)
        seen.append(u)
    distinct = int(np.unique(np.concatenate(seen)).size) if seen else 0
    return total, distinct


def partition_parcels(specs: dict[str, GridSpec], geoms_by_grid: dict[str, np.ndarray],
                      grid_of: np.ndarray, *, seconds_per_chunk: dict[str, float],
                      target_s: float, min_tasks: int, straddle: bool = True,
                      min_edge: dict[str, tuple[int, tuple[int, int]]] | None = None,
                      ) -> tuple[list[BlockTask], dict[str, int]]:
    """Tasks over every grid: each grid's parcels (``grid_of`` = the grid's position in
    ``sorted(specs)``) in lattice-aligned blocks sized by :func:`block_edge` (at least
    ``min_edge[grid] = (edge, shift)``, see :func:`block_tasks`); parcels on no grid, or
    without a chunk, form one more task (they read nothing). With ``straddle`` the tasks
    are :func:`block_tasks` (no chunk read twice); without, each parcel goes whole to the
    block of its top-left chunk (:func:`block_parts`: straddlers read chunks of the
    neighbouring block). Returns the tasks and each grid's block edge."""
    tasks: list[BlockTask] = []
    edges: dict[str, int] = {}
    names = sorted(specs)
    share = max(1, min_tasks // max(1, int(np.unique(grid_of[grid_of >= 0]).size)))
    for gi, name in enumerate(names):
        sel = np.flatnonzero(grid_of == gi)
        if sel.size == 0:
            continue
        spec = specs[name]
        geoms = geoms_by_grid[name][sel]
        ranges = chunk_ranges(shapely.bounds(geoms), spec)
        ranges[too_large(geoms, spec)] = -1  # the query reads nothing for these
        n_cols = spec.chunk_counts[1]
        edge = block_edge(ranges, n_cols, seconds_per_chunk=seconds_per_chunk[name],
                          target_s=target_s, min_tasks=share)
        least, shift = (min_edge or {}).get(name, (1, (0, 0)))
        edge = max(edge, least)
        edges[name] = edge
        if straddle:
            tasks += [BlockTask(name, sel[t.parcels], t.window, t.straddle)
                      for t in block_tasks(ranges, n_cols, edge, name, shift)]
        else:
            tasks += [BlockTask(name, sel[p]) for p in block_parts(ranges, n_cols, edge)]
        nothing = sel[ranges[:, 0] < 0]
        if nothing.size:
            tasks.append(BlockTask(name, nothing))
    rest = np.flatnonzero(grid_of < 0)
    if rest.size:
        tasks.append(BlockTask("", rest))
    return tasks, edges
