"""Per-chunk label rasters: which pixels of a chunk belong to which parcels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.features import rasterize

__all__ = ["ChunkLabels", "label_chunk"]


@dataclass(frozen=True)
class ChunkLabels:
    """Pixels of one chunk that fall in parcels, grouped by parcel.

    ``pixels`` are flat indices into the chunk and ``parcels`` the parcel of each, sorted by
    parcel, so reductions run as ``reduceat`` over contiguous runs. A pixel appears once per
    parcel that claims it (overlapping parcels each keep theirs).
    """

    pixels: np.ndarray
    parcels: np.ndarray
    shape: tuple[int, int]


def label_chunk(
    geoms: np.ndarray,
    parcel_ids: np.ndarray,
    passes: np.ndarray,
    transform: Affine,
    shape: tuple[int, int],
    *,
    all_touched: bool,
) -> ChunkLabels:
    """Rasterise ``geoms`` (parcel indices ``parcel_ids``) onto a chunk.

    Pixel-centre rule by default (as rasterio and rasterstats); ``all_touched`` takes every pixel
    the outline touches. Parcels in different ``passes`` are burned separately.
    """
    pix_parts: list[np.ndarray] = []
    par_parts: list[np.ndarray] = []
    for p in np.unique(passes):
        sel = passes == p
        labels = rasterize(
            zip(geoms[sel], (parcel_ids[sel] + 1).tolist(), strict=True),
            out_shape=shape,
            transform=transform,
            fill=0,
            all_touched=all_touched,
            dtype="int32",
        ).ravel()
        idx = np.flatnonzero(labels)
        pix_parts.append(idx)
        par_parts.append(labels[idx].astype(np.int64) - 1)
    pixels = np.concatenate(pix_parts) if pix_parts else np.empty(0, np.int64)
    parcels = np.concatenate(par_parts) if par_parts else np.empty(0, np.int64)
    order = np.argsort(parcels, kind="stable")
    return ChunkLabels(pixels[order], parcels[order], shape)
