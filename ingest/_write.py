"""Execute region tasks: read source windows, merge overlaps, write whole chunks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import rasterio
import zarr
from rasterio.windows import Window

from parcelzarr._grid import GridSpec

from ._plan import RegionTask
from ._sources import SourceInfo

__all__ = ["merge_first_valid", "read_region", "write_region"]

logger = logging.getLogger(__name__)


def _valid(data: np.ndarray, nodata: float | int | None) -> np.ndarray:
    if nodata is None:
        return np.ones(data.shape, dtype=bool)
    if isinstance(nodata, float) and np.isnan(nodata):
        return ~np.isnan(data)
    return data != nodata


def merge_first_valid(
    base: np.ndarray, base_valid: np.ndarray, new: np.ndarray, new_valid: np.ndarray
) -> None:
    """Fill invalid pixels of ``base`` (in place) from valid pixels of ``new``."""
    take = ~base_valid & new_valid
    base[take] = new[take]
    base_valid |= take


def read_region(
    src: SourceInfo, spec: GridSpec, row0: int, row1: int, col0: int, col1: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of ``src`` inside grid pixels [row0:row1, col0:col1], nodata elsewhere.

    Returns ``(data, valid)`` or None when the source does not reach the region.
    """
    _a, _, c, _, _e, f = src.transform
    # Source pixel (0, 0) in grid pixel coordinates (same lattice: integer offsets).
    off_r = round((spec.y0 - f) / spec.res_y)
    off_c = round((c - spec.x0) / spec.res_x)
    r0, r1 = max(row0, off_r), min(row1, off_r + src.height)
    c0, c1 = max(col0, off_c), min(col1, off_c + src.width)
    if r0 >= r1 or c0 >= c1:
        return None
    fill = 0 if src.nodata is None else src.nodata
    out = np.full((row1 - row0, col1 - col0), fill, dtype=src.dtype)
    with rasterio.open(src.local_path) as ds:
        first = r0 - off_r  # first source row, counted from the north
        if src.south_up:  # the file stores row 0 in the south: read the mirror rows, flip
            first = src.height - (r1 - off_r)
        window = Window(c0 - off_c, first, c1 - c0, r1 - r0)
        block = ds.read(src.band_index, window=window)
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = block[::-1] if src.south_up else block
    valid = _valid(out, src.nodata)
    if src.dn_shift:  # older processing baseline: into the store's DN convention
        top = np.iinfo(out.dtype).max if out.dtype.kind in "iu" else None
        shifted = out[valid].astype(np.int64) + src.dn_shift
        out[valid] = np.clip(shifted, None, top).astype(out.dtype)
    if src.nodata is None:  # outside the source footprint is not valid
        valid[:] = False
        valid[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = True
    return out, valid


def write_region(
    task: RegionTask,
    sources: Sequence[SourceInfo],
    spec: GridSpec,
    array: zarr.Array,
    time_index: int,
    *,
    merge_existing: bool,
) -> int:
    """Write one task; returns the number of pixels written.

    With ``merge_existing`` the block already in the store wins where it is valid (an earlier
    ingested tile of the same date), so re-running or adding an overlapping tile is safe.
    """
    shape = (task.row1 - task.row0, task.col1 - task.col0)
    nodata = sources[task.sources[0]].nodata
    fill = 0 if nodata is None else nodata
    data = np.full(shape, fill, dtype=sources[task.sources[0]].dtype)
    valid = np.zeros(shape, dtype=bool)
    if merge_existing:
        data = np.asarray(array[time_index, task.row0 : task.row1, task.col0 : task.col1])
        valid = _valid(data, nodata)
        data = data.copy()
    for i in task.sources:
        part = read_region(sources[i], spec, task.row0, task.row1, task.col0, task.col1)
        if part is not None:
            merge_first_valid(data, valid, *part)
    array[time_index, task.row0 : task.row1, task.col0 : task.col1] = data
    return int(data.size)
