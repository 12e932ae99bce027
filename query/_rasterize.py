"""Per-chunk label rasters: which pixels of a chunk belong to which parcels (and how much)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize

from parcelzarr._grid import GridSpec

from ._coverage import coverage_cells

__all__ = ["MAX_PARCEL_SIDE", "ChunkLabels", "clip_to_grid", "label_chunk", "outside_pixels",
           "too_large"]

# rasterio emits "Dataset has no geotransform" spuriously when several threads rasterize at
# once (its GDAL error handler sees another thread's state); the burned rasters are identical
# to serial runs (checked chunk by chunk), so the message is noise for these in-memory rasters.
# It is silenced only while a rasterization runs. `warnings.catch_warnings` cannot do that
# across threads (each exit restores a snapshot of the global filter list, so concurrent
# uses undo each other), hence one filter shared by reference count.
_quiet_lock = threading.Lock()
_quiet: list[Any] = []  # [users, the filter entry]


@contextmanager
def _no_geotransform_noise() -> Iterator[None]:
    with _quiet_lock:
        if not _quiet:
            warnings.filterwarnings("ignore", message="Dataset has no geotransform",
                                    category=NotGeoreferencedWarning, module="rasterio")
            _quiet[:] = [0, warnings.filters[0]]
        _quiet[0] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet[0] -= 1
            if _quiet[0] == 0:
                with suppress(ValueError):  # a caller's own catch_warnings may have dropped it
                    cast(list[Any], warnings.filters).remove(_quiet[1])
                _quiet.clear()


@dataclass(frozen=True)
class ChunkLabels:
    """Pixels of one chunk that fall in parcels, grouped by parcel.

    ``pixels`` are flat indices into the chunk and ``parcels`` the parcel of each, sorted by
    parcel, so reductions run as ``reduceat`` over contiguous runs. A pixel appears once per
    parcel that claims it (overlapping parcels each keep theirs). ``weights`` is the fraction
    of each pixel the parcel covers (``coverage`` rule), else None.
    """

    pixels: np.ndarray
    parcels: np.ndarray
    shape: tuple[int, int]
    weights: np.ndarray | None = None


def _burn(geoms: np.ndarray, labels: np.ndarray, transform: Affine, shape: tuple[int, int],
          all_touched: bool) -> np.ndarray:
    with _no_geotransform_noise():
        return rasterize(
            zip(geoms, labels.tolist(), strict=True), out_shape=shape, transform=transform,
            fill=0, all_touched=all_touched, dtype="int32",
        ).ravel()


def label_chunk(
    geoms: np.ndarray,
    parcel_ids: np.ndarray,
    passes: np.ndarray,
    transform: Affine,
    shape: tuple[int, int],
    *,
    all_touched: bool,
    coverage: bool = False,
    base: Affine | None = None,
    offset: tuple[int, int] = (0, 0),
) -> ChunkLabels:
    """Rasterise ``geoms`` (parcel indices ``parcel_ids``, ascending) onto a chunk.

    Pixel-centre rule by default (as rasterio and rasterstats); ``all_touched`` takes every pixel
    the outline touches; ``coverage`` takes every touched pixel with the exact fraction of it
    the parcel covers (as exactextract; :func:`coverage_cells`, each parcel on its own).
    Otherwise parcels in different ``passes`` are burned separately. ``base`` and ``offset``
    (row, col) place the chunk in its grid (default: ``transform`` is the grid's) so coverage
    fractions are computed on grid-wide pixel lines.
    """
    if coverage:  # exact fractions along the outline (no passes: parcels are independent)
        r0, c0 = offset
        pix, pos, w = coverage_cells(geoms, base or transform, (r0, r0 + shape[0], c0,
                                                                 c0 + shape[1]))
        return ChunkLabels(pix, parcel_ids[pos], shape, w)
    # Each parcel is burned as its position in ``parcel_ids`` + 1 (ascending, like the ids),
    # so grouping pixels by parcel is a stable sort of small integers: a radix sort in 16 bits.
    pix_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    for p in (passes[:1] if passes.size and passes.min() == passes.max() else np.unique(passes)):
        sel = np.flatnonzero(passes == p)
        labels = _burn(geoms[sel], sel + 1, transform, shape, all_touched)
        if sel.size == parcel_ids.size and sel.size < np.iinfo(np.uint16).max:
            return _grouped(labels.astype(np.uint16), parcel_ids, shape)
        idx = np.flatnonzero(labels)
        pix_parts.append(idx)
        pos_parts.append(labels[idx] - 1)
    pixels = np.concatenate(pix_parts) if pix_parts else np.empty(0, np.int64)
    pos = np.concatenate(pos_parts) if pos_parts else np.empty(0, np.int64)
    order = np.argsort(pos.astype(np.uint16) if parcel_ids.size < np.iinfo(np.uint16).max
                       else pos, kind="stable")
    return ChunkLabels(pixels[order], parcel_ids[pos[order]], shape)


def _grouped(labels: np.ndarray, parcel_ids: np.ndarray, shape: tuple[int, int]) -> ChunkLabels:
    """Pixels of a one-pass label raster (``uint16`` positions + 1, 0 = no parcel) grouped
    by parcel, in pixel order within each parcel."""
    order = np.argsort(labels, kind="stable")  # radix sort: O(pixels)
    order = order[np.count_nonzero(labels == 0):]
    return ChunkLabels(order, parcel_ids[labels[order].astype(np.int64) - 1], shape)


#: Largest parcel accepted, as pixels along one side of its bounding box (2**20 px: 10,486 km
#: at 10 m). Beyond it a parcel cannot be real (wrong units or CRS) and its outside pixels
#: could not be counted in bounded time; it gets the status "too large".
MAX_PARCEL_SIDE = 1 << 20
#: Edge, in pixels, of the blocks that :func:`outside_pixels` rasterises; larger blocks are
#: decided from the geometry alone (wholly inside or clear of the parcel) or split.
_LEAF = 256


def too_large(geoms: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Per parcel: whether its bounding box spans more than :data:`MAX_PARCEL_SIDE` pixels
    of ``spec`` (or has non-finite bounds)."""
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore", over="ignore"):
        w = (b[:, 2] - b[:, 0]) / spec.res_x
        h = (b[:, 3] - b[:, 1]) / spec.res_y
        far = np.maximum(np.abs(b[:, [0, 2]] - spec.x0).max(axis=1) / spec.res_x,
                         np.abs(b[:, [1, 3]] - spec.y0).max(axis=1) / spec.res_y)
        big = (w > MAX_PARCEL_SIDE) | (h > MAX_PARCEL_SIDE) | (far > 4 * MAX_PARCEL_SIDE)
    return big & ~shapely.is_empty(geoms)


def clip_to_grid(geoms: np.ndarray, spec: GridSpec) -> np.ndarray:
    """``geoms`` with those reaching more than a pixel beyond the grid cut to the grid plus a
    two-pixel margin, for rasterising: the pixels of the grid (centres, touched pixels and
    coverage fractions) are unchanged, while work and memory no longer follow the parcel's
    extent beyond the grid. Parcels inside the grid are returned as they are."""
    left, bottom, right, top = spec.bounds
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        beyond = ((b[:, 0] < left - spec.res_x) | (b[:, 2] > right + spec.res_x)
                  | (b[:, 1] < bottom - spec.res_y) | (b[:, 3] > top + spec.res_y))
    idx = np.flatnonzero(beyond)
    if idx.size == 0:
        return geoms
    frame = shapely.box(left - 2 * spec.res_x, bottom - 2 * spec.res_y,
                        right + 2 * spec.res_x, top + 2 * spec.res_y)
    out = geoms.copy()
    out[idx] = shapely.intersection(geoms[idx], frame)
    return out


def outside_pixels(geoms: np.ndarray, spec: GridSpec, *, all_touched: bool,
                   coverage: bool) -> np.ndarray:
    """Pixels of each parcel that lie outside the grid (counted as ``nodata``, as rasterstats
    counts cells beyond the raster's edge).

    Only parcels whose pixel window crosses the grid's edge are counted, over the part of
    their window beyond the grid, in blocks: a block wholly inside the parcel counts whole,
    one clear of it counts nothing, and only blocks on the parcel's outline are rasterised
    (``_LEAF``-square at most). Memory is bounded and time follows the outline's length,
    whatever the parcel's extent. With ``coverage`` the outside area is exact:
    (area - area inside the grid) / pixel area. Parcels that are :func:`too_large` give 0.
    """
    out = np.zeros(len(geoms), dtype=np.float64 if coverage else np.int64)
    if len(geoms) == 0:
        return out
    left, bottom, right, top = spec.bounds
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        crosses = ~shapely.is_empty(geoms) & ((b[:, 0] < left) | (b[:, 1] < bottom)
                                              | (b[:, 2] > right) | (b[:, 3] > top))
    crosses &= ~too_large(geoms, spec)
    idx = np.flatnonzero(crosses)
    if idx.size == 0:
        return out
    if coverage:
        inside = shapely.area(shapely.intersection(geoms[idx], shapely.box(*spec.bounds)))
        out[idx] = (shapely.area(geoms[idx]) - inside) / (spec.res_x * spec.res_y)
        return out
    for i in idx:  # edge parcels only
        c0 = int(np.floor((b[i, 0] - spec.x0) / spec.res_x))
        c1 = int(np.ceil((b[i, 2] - spec.x0) / spec.res_x))
        r0 = int(np.floor((spec.y0 - b[i, 3]) / spec.res_y))
        r1 = int(np.ceil((spec.y0 - b[i, 1]) / spec.res_y))
        if r1 <= r0 or c1 <= c0:
            continue
        shapely.prepare(geoms[i])
        out[i] = sum(_count_pixels(geoms[i], spec, block, all_touched)
                     for block in _beyond(r0, r1, c0, c1, spec.height, spec.width))
    return out


def _beyond(r0: int, r1: int, c0: int, c1: int, height: int, width: int
            ) -> list[tuple[int, int, int, int]]:
    """The pixel window ``[r0, r1) x [c0, c1)`` minus the grid ``[0, height) x [0, width)``,
    as at most four disjoint (row0, row1, col0, col1) blocks."""
    blocks = [(r0, min(r1, 0), c0, c1), (max(r0, height), r1, c0, c1)]
    mr0, mr1 = max(r0, 0), min(r1, height)
    blocks += [(mr0, mr1, c0, min(c1, 0)), (mr0, mr1, max(c0, width), c1)]
    return [(a, b, c, d) for a, b, c, d in blocks if a < b and c < d]


def _count_pixels(geom: shapely.Geometry, spec: GridSpec, block: tuple[int, int, int, int],
                  all_touched: bool) -> int:
    """Pixels of ``block`` (row0, row1, col0, col1) that ``geom`` claims, as GDAL burns them.

    Blocks are split in four until each is wholly inside the parcel (every pixel counts),
    clear of it (none counts), or at most ``_LEAF`` pixels square (rasterised). For the
    centre rule a block is judged by the hull of its pixel centres; with ``all_touched`` by
    its whole area, and it is clear only a hundredth of a pixel away from the parcel."""
    total = 0
    todo = np.array([block], dtype=np.int64)
    # the area a block's pixels are decided by: their centres' hull for the centre rule,
    # their whole area (and a hundredth of a pixel around it) with all_touched
    inset, margin = (0.0, 0.01 * min(spec.res_x, spec.res_y)) if all_touched else (0.5, 0.0)
    while todo.size:
        r0, r1, c0, c1 = todo.T
        boxes = shapely.box(spec.x0 + (c0 + inset) * spec.res_x,
                            spec.y0 - (r1 - inset) * spec.res_y,
                            spec.x0 + (c1 - inset) * spec.res_x,
                            spec.y0 - (r0 + inset) * spec.res_y)
        near = shapely.dwithin(geom, boxes, margin) if margin else shapely.intersects(geom, boxes)
        full = near & shapely.contains_properly(geom, boxes)
        total += int(((r1 - r0) * (c1 - c0))[full].sum())
        part = near & ~full
        small = part & (r1 - r0 <= _LEAF) & (c1 - c0 <= _LEAF)
        for a, bb, c, d in todo[small]:
            t = spec.transform @ Affine.translation(int(c), int(a))
            total += int(rasterize([(geom, 1)], out_shape=(int(bb - a), int(d - c)),
                                   transform=t, fill=0, all_touched=all_touched,
                                   dtype="uint8").sum())
        split = todo[part & ~small]
        if split.size == 0:
            break
        r0, r1, c0, c1 = split.T
        rm, cm = (r0 + r1) // 2, (c0 + c1) // 2
        todo = np.concatenate([np.stack(q, axis=1) for q in (
            (r0, rm, c0, cm), (r0, rm, cm, c1), (rm, r1, c0, cm), (rm, r1, cm, c1))])
        todo = todo[(todo[:, 0] < todo[:, 1]) & (todo[:, 2] < todo[:, 3])]
    return total
