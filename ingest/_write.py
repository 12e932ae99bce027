"""Execute region tasks: read source windows, merge overlaps, write whole chunks.

Overlap rule: at every pixel, the valid pixel of the source with the smallest tile id (or file
name) among the sources of that band and date wins. A source added to a date that already
holds committed sources merges with them under the same rule, so the committed store does not
depend on the order in which sources were ingested, nor on how they were split across runs.
Pixels that no source covers stay "no data", for layers without declared nodata too (the
grid's footprints say which pixels are covered; see :mod:`parcelzarr._footprint`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import rasterio
import zarr
from parcelzarr.stores import parse_location
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from parcelzarr import _config
from parcelzarr._footprint import (
    Footprint,
    covered_mask,
    empty_value,
    valid_mask,
    windows_of,
)
from parcelzarr._grid import GridSpec
from parcelzarr.errors import IngestConflictError

from ._expand import fetch_source
from ._inspect import has_dataset_mask, north_up
from ._plan import RegionTask
from ._sources import SourceInfo

__all__ = ["read_region", "write_region"]

logger = logging.getLogger(__name__)

_NONE = np.iinfo(np.int64).max  # rank of "no source provides this pixel"


def _offsets(transform: Sequence[float], spec: GridSpec) -> tuple[int, int]:
    """Grid (row, col) of a source's pixel (0, 0) (same lattice: integer offsets)."""
    _a, _, c, _, _e, f = transform[:6]
    return round((spec.y0 - f) / spec.res_y), round((c - spec.x0) / spec.res_x)


def read_region(
    src: SourceInfo, spec: GridSpec, row0: int, row1: int, col0: int, col1: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of ``src`` inside grid pixels [row0:row1, col0:col1], nodata elsewhere.

    Returns ``(data, valid)`` or None when the source does not reach the region. ``valid``
    is False outside the source's footprint and where the source holds nodata (or NaN).
    """
    off_r, off_c = _offsets(src.transform, spec)
    r0, r1 = max(row0, off_r), min(row1, off_r + src.height)
    c0, c1 = max(col0, off_c), min(col1, off_c + src.width)
    if r0 >= r1 or c0 >= c1:
        return None
    out = np.full((row1 - row0, col1 - col0), empty_value(np.dtype(src.dtype), src.nodata),
                  dtype=src.dtype)
    valid = np.zeros(out.shape, dtype=bool)
    inner = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
    with rasterio.open(src.local_path) as ds:
        first = r0 - off_r  # first source row, counted from the north
        if src.south_up:  # the file stores row 0 in the south: read the mirror rows, flip
            first = src.height - (r1 - off_r)
        window = Window(c0 - off_c, first, c1 - c0, r1 - r0)
        block = ds.read(src.band_index, window=window)
        if src.masked:  # cells the file's mask band marks invalid become nodata
            block[ds.read_masks(src.band_index, window=window) == 0] = src.nodata
        out[inner] = block[::-1] if src.south_up else block
    valid[inner] = valid_mask(out[inner], src.nodata)
    if src.dn_shift:  # older processing baseline: into the store's DN convention
        top = np.iinfo(out.dtype).max if out.dtype.kind in "iu" else None
        shifted = out[valid].astype(np.int64) + src.dn_shift
        out[valid] = np.clip(shifted, None, top).astype(out.dtype)
    return out, valid


def _committed_valid(fp: Footprint, nodata: float | int | None, spec: GridSpec,
                     task: RegionTask, options: Mapping[str, Any] | None,
                     tiles: Sequence[str]) -> np.ndarray:
    """Valid pixels of an already committed source over the task's region (re-read)."""
    try:
        loc = parse_location(fp.uri)
        path = (loc.path if loc.protocol == "file"
                else fetch_source(fp.uri, options, _config.cache_dir() / "sources"))
        with rasterio.open(path) as ds:
            south_up = ds.transform.e > 0
            off_r, off_c = _offsets(north_up(tuple(ds.transform)[:6], ds.height), spec)
            r0, r1 = max(task.row0, off_r), min(task.row1, off_r + ds.height)
            c0, c1 = max(task.col0, off_c), min(task.col1, off_c + ds.width)
            out = np.zeros((task.row1 - task.row0, task.col1 - task.col0), dtype=bool)
            if r0 < r1 and c0 < c1:
                first = ds.height - (r1 - off_r) if south_up else r0 - off_r
                window = Window(c0 - off_c, first, c1 - c0, r1 - r0)
                ok = valid_mask(ds.read(fp.band_index, window=window), nodata)
                if ds.nodata is None and has_dataset_mask(ds):
                    ok &= ds.read_masks(fp.band_index, window=window) != 0
                out[r0 - task.row0:r1 - task.row0, c0 - task.col0:c1 - task.col0] = (
                    ok[::-1] if south_up else ok)
            bounds = tuple(ds.bounds)
    except (OSError, RasterioIOError) as exc:
        raise IngestConflictError(
            f"{task.band} {task.time:%Y-%m-%d}: placing {', '.join(tiles)} by the overlap rule "
            f"needs the valid pixels of {fp.tile}, already in the store, but {fp.uri} cannot be "
            "read; make it readable again (same path) and re-run"
        ) from exc
    if not np.allclose(bounds, fp.bounds, rtol=0, atol=1e-6 * max(spec.res_x, spec.res_y)):
        raise IngestConflictError(
            f"{fp.uri} no longer has the bounds it had when tile {fp.tile} was ingested; "
            f"restore it to place {', '.join(tiles)} by the overlap rule"
        )
    return out


def _committed_ranks(data: np.ndarray, nodata: float | int | None, spec: GridSpec,
                     task: RegionTask, committed: Sequence[Footprint],
                     rank: Mapping[str, int], new_max: int,
                     options: Mapping[str, Any] | None, tiles: Sequence[str]) -> np.ndarray:
    """Per pixel, the rank of the committed source that provides the stored value
    (``_NONE`` where none does). Sources are re-read only where two committed footprints
    overlap and a new source ranks below the first of them."""
    rows = np.arange(task.row0, task.row1)[:, None]
    cols = np.arange(task.col0, task.col1)[None, :]
    order = sorted(committed, key=lambda f: rank[f.tile])
    cover = [covered_mask(windows_of(spec, [fp]), rows, cols) for fp in order]
    best = np.full(data.shape, _NONE, dtype=np.int64)
    if not cover:
        return best
    count = np.sum(cover, axis=0)
    ok = valid_mask(data, nodata) & (count > 0)
    for fp, cv in zip(order, cover, strict=True):
        best[ok & (count == 1) & cv] = rank[fp.tile]
    multi = ok & (count >= 2)
    for fp, cv in zip(order, cover, strict=True):
        m = multi & cv & (best == _NONE)
        if not m.any():
            continue
        whole = (nodata is None and data.dtype.kind != "f") or not fp.uri  # (no uri: legacy)
        if rank[fp.tile] > new_max or whole:
            # Every new source outranks it (and all later ones), or the whole footprint is
            # valid: no need to know more.
            best[m] = rank[fp.tile]
            continue
        best[m & _committed_valid(fp, nodata, spec, task, options, tiles)] = rank[fp.tile]
    return best


def write_region(
    task: RegionTask,
    sources: Sequence[SourceInfo],
    spec: GridSpec,
    array: zarr.Array,
    time_index: int,
    *,
    committed: Sequence[Footprint] = (),
    source_storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write one task; returns the number of pixels written.

    ``committed`` are the footprints of sources of this band and date already committed:
    their stored pixels are merged with the task's sources under the overlap rule.
    """
    shape = (task.row1 - task.row0, task.col1 - task.col0)
    first = sources[task.sources[0]]
    nodata = first.nodata
    region = (time_index, slice(task.row0, task.row1), slice(task.col0, task.col1))
    new = sorted((sources[i].tile_id, i) for i in task.sources)
    if committed:
        tiles = sorted({fp.tile for fp in committed} | {t for t, _ in new})
        rank = {t: k for k, t in enumerate(tiles)}
        data = np.asarray(array[region]).copy()
        best = _committed_ranks(data, nodata, spec, task, committed, rank,
                                max(rank[t] for t, _ in new), source_storage_options,
                                [t for t, _ in new])
    else:
        data = np.full(shape, empty_value(np.dtype(first.dtype), nodata), dtype=first.dtype)
        best = np.full(shape, _NONE, dtype=np.int64)
        rank = {t: k for k, (t, _) in enumerate(new)}
    for tile, i in new:
        part = read_region(sources[i], spec, task.row0, task.row1, task.col0, task.col1)
        if part is None:
            continue
        values, valid = part
        take = valid & (best > rank[tile])
        data[take] = values[take]
        best[take] = rank[tile]
    array[region] = data
    return int(data.size)
