"""Query planning (pure): which chunks each parcel needs, which parcels each chunk serves.

Given parcel geometries in a grid's CRS and the grid, :func:`plan_chunks` returns a frozen
:class:`ChunkPlan` before a byte is fetched: every needed chunk once, in spatial (row-major)
order, with its parcels, plus the rasterisation pass of each parcel so that overlapping parcels
are burned in separate passes and each keeps all its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from parcelzarr._grid import GridSpec

__all__ = ["ChunkPlan", "overlap_passes", "plan_chunks"]


@dataclass(frozen=True)
class ChunkPlan:
    """Chunks to read for a set of parcels on one grid.

    Attributes
    ----------
    chunks:
        ``(m, 2)`` chunk (row, col) indices, row-major.
    ptr, parcels:
        CSR: the parcels (indices into the input) served by chunk ``k`` are
        ``parcels[ptr[k]:ptr[k + 1]]``.
    per_parcel:
        Number of chunks each parcel touches (0 for parcels outside the grid or empty).
    passes:
        Rasterisation pass of each parcel (0 for most; overlapping parcels get distinct ones).
    """

    spec: GridSpec
    chunks: np.ndarray
    ptr: np.ndarray
    parcels: np.ndarray
    per_parcel: np.ndarray
    passes: np.ndarray

    @property
    def n_chunks(self) -> int:
        return int(self.chunks.shape[0])

    def chunk_window(self, k: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) pixel window of chunk ``k``."""
        cy, cx = (int(v) for v in self.chunks[k])
        s = self.spec
        return (
            cy * s.chunk_y, min(s.height, (cy + 1) * s.chunk_y),
            cx * s.chunk_x, min(s.width, (cx + 1) * s.chunk_x),
        )

    def parcels_of(self, k: int) -> np.ndarray:
        return self.parcels[self.ptr[k] : self.ptr[k + 1]]

    def within(self, window: tuple[int, int, int, int]) -> ChunkPlan:
        """The plan restricted to the chunks of ``window`` (chunk rows ``cy0:cy1``, columns
        ``cx0:cx1``, half-open), in the same order; ``per_parcel`` counts those only."""
        cy0, cy1, cx0, cx1 = window
        cy, cx = self.chunks[:, 0], self.chunks[:, 1]
        keep = np.flatnonzero((cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1))
        sizes = np.diff(self.ptr)[keep]
        ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        at = np.repeat(self.ptr[keep] - ptr[:-1], sizes) + np.arange(int(ptr[-1]))
        parcels = self.parcels[at]
        per_parcel = np.bincount(parcels, minlength=self.per_parcel.size).astype(np.int64)
        return ChunkPlan(self.spec, self.chunks[keep], ptr, parcels, per_parcel, self.passes)


def _pixel_windows(bounds: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Vectorised :meth:`GridSpec.pixel_window` for ``(n, 4)`` bounds; empty rows for NaN."""
    eps = 1e-9
    left, bottom, right, top = (bounds[:, i] for i in range(4))
    with np.errstate(invalid="ignore"):
        c0 = np.floor((left - spec.x0) / spec.res_x + eps)
        c1 = np.ceil((right - spec.x0) / spec.res_x - eps)
        r0 = np.floor((spec.y0 - top) / spec.res_y + eps)
        r1 = np.ceil((spec.y0 - bottom) / spec.res_y - eps)
    win = np.stack([r0, r1, c0, c1], axis=1)
    win = np.nan_to_num(win, nan=0.0)
    win[:, 0:2] = np.clip(win[:, 0:2], 0, spec.height)
    win[:, 2:4] = np.clip(win[:, 2:4], 0, spec.width)
    return win.astype(np.int64)


def _centre_ranges(bx: np.ndarray, spec: GridSpec
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First column and row, and counts, of the pixel centres inside ``(n, 4)`` bounds."""
    with np.errstate(invalid="ignore"):
        c0 = np.ceil((bx[:, 0] - spec.x0) / spec.res_x - 0.5)
        c1 = np.floor((bx[:, 2] - spec.x0) / spec.res_x - 0.5)
        r0 = np.ceil((spec.y0 - bx[:, 3]) / spec.res_y - 0.5)
        r1 = np.floor((spec.y0 - bx[:, 1]) / spec.res_y - 0.5)
    nx = np.nan_to_num(np.clip(c1 - c0 + 1, 0, None)).astype(np.int64)
    ny = np.nan_to_num(np.clip(r1 - r0 + 1, 0, None)).astype(np.int64)
    return np.nan_to_num(c0), np.nan_to_num(r0), nx, ny


def _centres_hit(a: np.ndarray, b: np.ndarray | None, sel: np.ndarray, c0: np.ndarray,
                 r0: np.ndarray, nx: np.ndarray, ny: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Which pairs ``sel`` have a pixel centre of their range in ``a`` (and in ``b``)."""
    cnt = nx[sel] * ny[sel]
    pair = np.repeat(sel, cnt)
    k = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    x = spec.x0 + (c0[pair] + k % nx[pair] + 0.5) * spec.res_x
    y = spec.y0 - (r0[pair] + k // nx[pair] + 0.5) * spec.res_y
    hit = shapely.intersects_xy(a[pair], x, y)
    if b is not None:
        hit[hit] = shapely.intersects_xy(b[pair[hit]], x[hit], y[hit])
    return np.unique(pair[hit])


def _share_a_centre(a: np.ndarray, b: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Whether ``a[i]`` and ``b[i]`` both hold (or touch) one pixel centre of ``spec``.

    Pairs whose bounding boxes overlap on at most 4,096 centres test those centres against
    both parcels (prepared, vectorised; no overlay). Larger overlaps compute the GEOS
    intersection first and test the centres in its bounds (conservatively True beyond 256).
    """
    ba, bb = shapely.bounds(a), shapely.bounds(b)
    both = np.concatenate([np.maximum(ba[:, :2], bb[:, :2]), np.minimum(ba[:, 2:], bb[:, 2:])],
                          axis=1)
    c0, r0, nx, ny = _centre_ranges(both, spec)
    n = nx * ny
    out = np.zeros(len(a), dtype=bool)
    near = np.flatnonzero((n > 0) & (n <= 4096))
    if near.size:
        shapely.prepare(a[near])
        shapely.prepare(b[near])
        out[_centres_hit(a, b, near, c0, r0, nx, ny, spec)] = True
    wide = np.flatnonzero(n > 4096)
    if wide.size:
        inter = np.empty(len(a), dtype=object)
        inter[wide] = shapely.intersection(a[wide], b[wide])
        c0, r0, nx, ny = _centre_ranges(shapely.bounds(inter[wide]), spec)
        m = nx * ny
        out[wide[m > 256]] = True
        small = np.flatnonzero((m > 0) & (m <= 256))
        if small.size:
            hit = _centres_hit(inter[wide], None, small, c0, r0, nx, ny, spec)
            out[wide[hit]] = True
    return out


def overlap_passes(geoms: np.ndarray, *, all_touched: bool, res: float,
                   spec: GridSpec | None = None) -> np.ndarray:
    """Colour parcels so that no two that could claim the same pixel share a pass.

    With the pixel-centre rule only parcels whose interiors overlap conflict (and, given the
    grid ``spec``, only where their overlap holds a pixel centre: slivers between neighbours
    do not); with ``all_touched`` any two closer than a pixel diagonal do.
    """
    n = len(geoms)
    passes = np.zeros(n, dtype=np.int32)
    if n < 2:
        return passes
    tree = shapely.STRtree(geoms)
    if all_touched:
        pairs = tree.query(geoms, predicate="dwithin", distance=res * 1.5)
    else:
        # bounding-box candidates; given the grid, the pairs that both hold a pixel centre
        # (tested on the centres where their boxes overlap), else the pairs whose interiors
        # meet (one vectorised DE-9IM test)
        pairs = tree.query(geoms)
        pairs = pairs[:, pairs[0] < pairs[1]]
        if spec is not None and pairs.shape[1]:
            pairs = pairs[:, _share_a_centre(geoms[pairs[0]], geoms[pairs[1]], spec)]
        else:
            meet = shapely.relate_pattern(geoms[pairs[0]], geoms[pairs[1]], "T********")
            pairs = pairs[:, meet]
    a, b = pairs
    keep = a != b
    a, b = a[keep], b[keep]
    if a.size == 0:
        return passes
    edges = np.concatenate([np.stack([a, b]), np.stack([b, a])], axis=1)
    order = np.lexsort((edges[1], edges[0]))
    src, dst = edges[0][order], edges[1][order]
    starts = np.searchsorted(src, np.arange(n + 1))
    involved = np.unique(src)
    for i in involved:  # greedy colouring, only over parcels that have a conflict
        used = {int(passes[j]) for j in dst[starts[i] : starts[i + 1]] if j < i}
        c = 0
        while c in used:
            c += 1
        passes[i] = c
    return passes


def plan_chunks(geoms: np.ndarray, spec: GridSpec, *, all_touched: bool = False,
                coverage: bool = False) -> ChunkPlan:
    """Plan the chunk reads for ``geoms`` (shapely array in the grid's CRS).

    ``coverage``: coverage weights label each parcel on its own (no burn to share), so every
    parcel is in pass 0 and the overlap colouring is skipped.
    """
    n = len(geoms)
    empty = shapely.is_empty(geoms) | shapely.is_missing(geoms)
    bounds = shapely.bounds(geoms)
    win = _pixel_windows(bounds, spec)
    ok = ~empty & (win[:, 1] > win[:, 0]) & (win[:, 3] > win[:, 2])
    cy0, cy1, cx0, cx1 = spec.tiles.chunk_spans(win).T
    ny = np.where(ok, cy1 - cy0 + 1, 0)
    nx = np.where(ok, cx1 - cx0 + 1, 0)
    per_parcel = ny * nx
    total = int(per_parcel.sum())
    pid = np.repeat(np.arange(n), per_parcel)
    # position of each expanded entry inside its parcel's (ny, nx) block
    offs = np.arange(total) - np.repeat(np.cumsum(per_parcel) - per_parcel, per_parcel)
    nxr = np.repeat(nx, per_parcel)
    cy = np.repeat(cy0, per_parcel) + offs // np.maximum(nxr, 1)
    cx = np.repeat(cx0, per_parcel) + offs % np.maximum(nxr, 1)
    n_cols = spec.chunk_counts[1]
    key = cy * n_cols + cx
    order = np.lexsort((pid, key))
    key, pid = key[order], pid[order]
    uniq, first = np.unique(key, return_index=True)
    ptr = np.r_[first, total].astype(np.int64)
    chunks = np.stack([uniq // n_cols, uniq % n_cols], axis=1).astype(np.int64)
    passes = np.zeros(n, dtype=np.int32) if coverage else overlap_passes(
        geoms, all_touched=all_touched, res=max(spec.res_x, spec.res_y), spec=spec)
    return ChunkPlan(spec, chunks, ptr, pid.astype(np.int64), per_parcel.astype(np.int64), passes)
