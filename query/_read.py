"""``ParcelStore.read``: the pixels of one parcel as an :class:`xarray.Dataset`."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import shapely
import xarray as xr
import zarr
from rasterio.features import geometry_mask
from zarr.core.sync import sync

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue, band_array
from parcelzarr._footprint import covered_mask
from parcelzarr.errors import DateNotFoundError, GeometryError, plain

from ._assign import assign
from ._chunk_cache import ChunkCache, read_window
from ._parcels import ParcelSet
from ._request import Output
from ._select import TimeSelection, describe_times, normalise_bands, select_times

__all__ = ["read_parcel"]


def read_parcel(root: zarr.Group, catalogue: Catalogue, pset: ParcelSet, *,
                bands: str | Iterable[str] | None, time: TimeSelection, all_touched: bool,
                cache: ChunkCache) -> xr.Dataset:
    """The pixels of the one parcel of ``pset`` (see :meth:`ParcelStore.read`)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if len(pset) != 1:
        raise GeometryError(f"read() takes one geometry, got {len(pset)}; use zonal_stats")
    band_list = normalise_bands(bands, catalogue.bands)
    assignment = assign(pset, catalogue, [Output(b, (b,)) for b in band_list])
    if not assignment:
        raise GeometryError(
            "the parcel lies outside the store's coverage (grids: "
            + ", ".join(f"{g.name} {tuple(round(v) for v in g.spec.bounds)}"
                        for g in catalogue.grids.values()) + ")"
        )
    grid_name = assignment[0].grid
    info = catalogue.grids[grid_name]
    band_list = [o.name for o in assignment[0].outputs]
    geom = pset.to_crs(info.spec.crs)[0]
    r0, r1, c0, c1 = info.spec.pixel_window(shapely.bounds(geom))
    t_idx = select_times(info.times, time)
    if t_idx.size == 0:
        raise DateNotFoundError(
            f"time {plain(time)!r} matches no date of grid {grid_name}, which holds "
            f"{describe_times(info.times)}")
    if r1 <= r0 or c1 <= c0:
        raise GeometryError("the parcel covers no pixel of the store")

    arrays = {b: band_array(root, grid_name, b)._async_array for b in band_list}
    data = sync(read_window(arrays, grid=grid_name, times=t_idx, window=(r0, r1, c0, c1),
                            cache=cache, concurrency=_config.default_concurrency()))
    blocks = [data[b] for b in band_list]
    transform = info.spec.transform @ info.spec.transform.translation(c0, r0)
    inside = ~geometry_mask([geom], out_shape=(r1 - r0, c1 - c0), transform=transform,
                            all_touched=all_touched)
    x = info.spec.x0 + (np.arange(c0, c1) + 0.5) * info.spec.res_x
    y = info.spec.y0 - (np.arange(r0, r1) + 0.5) * info.spec.res_y
    data_vars = {}
    rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
    for band, block in zip(band_list, blocks, strict=True):
        bi = info.bands[band]
        if bi.nodata is None and info.footprints is not None:
            # No fill value is free to mean "no data": float, NaN outside the parcel
            # and where no source covers the pixel.
            covered = np.stack([covered_mask(info.source_windows(band, int(t)),
                                             rows, cols) for t in t_idx])
            block = np.where(inside[None] & covered, block, np.nan)
        else:
            fill = 0 if bi.nodata is None else bi.nodata
            block = np.where(inside[None], block, np.asarray(fill, dtype=block.dtype))
        attrs = {k: v for k, v in (("_FillValue", bi.nodata),
                                   ("scale_factor", bi.scale_factor),
                                   ("add_offset", bi.add_offset)) if v is not None}
        data_vars[band] = (("time", "y", "x"), block, attrs)
    ds = xr.Dataset(
        data_vars,
        coords={"time": info.times[t_idx].astype("datetime64[ns]"), "y": y, "x": x,
                "inside": (("y", "x"), inside)},
        attrs={"grid": grid_name},
    )
    return ds.rio.write_crs(info.spec.crs).rio.write_transform(transform)
