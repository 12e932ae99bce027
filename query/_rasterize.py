"""Per-chunk label rasters: which pixels of a chunk belong to which parcels (and how much)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize

from parcelzarr._grid import GridSpec

from ._coverage import coverage_cells

__all__ = ["ChunkLabels", "label_chunk", "outside_pixels"]

# rasterio emits this spuriously when several threads rasterize at once (its GDAL error
# handler sees another thread's state); the burned rasters are identical to serial runs
# (checked chunk by chunk), so the message is noise for these in-memory rasters only.
warnings.filterwarnings("ignore", message="Dataset has no geotransform",
                        category=NotGeoreferencedWarning, module="rasterio")


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
    return rasterize(
        zip(geoms, labels.tolist(), strict=True), out_shape=shape, transform=transform,
        fill=0, all_touched=all_touched, dtype="int32",
    ).ravel()


def _coverage(geoms: np.ndarray, parcel_ids: np.ndarray, transform: Affine,
              shape: tuple[int, int], base: Affine, offset: tuple[int, int],
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact coverage fractions of one pass (parcels at least a pixel apart).

    Every pixel the parcel touches is a candidate; pixels crossed by its outline get the area
    of (polygon ∩ pixel box) / pixel area, computed with shapely 2 in one vectorised call;
    the others are interior and weigh 1.
    """
    labels = _burn(geoms, parcel_ids + 1, transform, shape, True)
    edge = _burn(shapely.boundary(geoms), parcel_ids + 1, transform, shape, True)
    idx = np.flatnonzero(labels | edge)
    lab = np.where(labels[idx] > 0, labels[idx], edge[idx]).astype(np.int64) - 1
    w = np.ones(idx.size, dtype=np.float64)
    on_edge = edge[idx] > 0
    if on_edge.any():
        e = idx[on_edge]
        rows, cols = np.divmod(e, shape[1])
        # pixel boxes from the grid's own origin and global indices, so that a pixel's box
        # (and its fraction, down to the last bit) does not depend on the chunking
        a, _, c, _, ee, f = base[:6]
        x0 = c + (cols + offset[1]) * a
        y0 = f + (rows + offset[0]) * ee
        boxes = shapely.box(np.minimum(x0, x0 + a), np.minimum(y0, y0 + ee),
                            np.maximum(x0, x0 + a), np.maximum(y0, y0 + ee))
        local = np.searchsorted(parcel_ids, lab[on_edge])
        inter = shapely.intersection(boxes, geoms[local])
        w[on_edge] = shapely.area(inter) / abs(a * ee)
    keep = w > 0  # pixels merely touched along an edge or at a corner
    return idx[keep], lab[keep], w[keep]


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
    the parcel covers (as exactextract). Parcels in different ``passes`` are burned separately.
    ``base`` and ``offset`` (row, col) place the chunk in its grid (default: ``transform`` is
    the grid's) so coverage fractions are computed on grid-wide pixel boxes.
    """
    if coverage:  # exact fractions along the outline (no passes: parcels are independent)
        r0, c0 = offset
        pix, pos, w = coverage_cells(geoms, base or transform, (r0, r0 + shape[0], c0,
                                                                 c0 + shape[1]))
        return ChunkLabels(pix, parcel_ids[pos], shape, w)
    pix_parts: list[np.ndarray] = []
    par_parts: list[np.ndarray] = []
    w_parts: list[np.ndarray] = []
    for p in np.unique(passes):
        sel = passes == p
        if coverage:
            idx, lab, w = _coverage(geoms[sel], parcel_ids[sel], transform, shape,
                                    base or transform, offset)
            w_parts.append(w)
        else:
            labels = _burn(geoms[sel], parcel_ids[sel] + 1, transform, shape, all_touched)
            idx = np.flatnonzero(labels)
            lab = labels[idx].astype(np.int64) - 1
        pix_parts.append(idx)
        par_parts.append(lab)
    pixels = np.concatenate(pix_parts) if pix_parts else np.empty(0, np.int64)
    parcels = np.concatenate(par_parts) if par_parts else np.empty(0, np.int64)
    order = np.argsort(parcels, kind="stable")
    weights = None
    if coverage:
        weights = (np.concatenate(w_parts) if w_parts else np.empty(0))[order]
    return ChunkLabels(pixels[order], parcels[order], shape, weights)


def outside_pixels(geoms: np.ndarray, spec: GridSpec, *, all_touched: bool,
                   coverage: bool) -> np.ndarray:
    """Pixels of each parcel that lie outside the grid (counted as ``nodata``, as rasterstats
    counts cells beyond the raster's edge).

    Only parcels whose pixel window crosses the grid's edge are rasterised, on their own window;
    with ``coverage`` the outside area is exact: (area - area inside the grid) / pixel area.
    """
    out = np.zeros(len(geoms), dtype=np.float64 if coverage else np.int64)
    if len(geoms) == 0:
        return out
    left, bottom, right, top = spec.bounds
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        crosses = ~shapely.is_empty(geoms) & ((b[:, 0] < left) | (b[:, 1] < bottom)
                                              | (b[:, 2] > right) | (b[:, 3] > top))
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
        t = spec.transform @ Affine.translation(c0, r0)
        lab = rasterize([(geoms[i], 1)], out_shape=(r1 - r0, c1 - c0), transform=t, fill=0,
                        all_touched=all_touched, dtype="uint8")
        rows = np.arange(r0, r1)[:, None]
        cols = np.arange(c0, c1)[None, :]
        beyond = (rows < 0) | (rows >= spec.height) | (cols < 0) | (cols >= spec.width)
        out[i] = int((lab.astype(bool) & beyond).sum())
    return out
