"""``ParcelStore.info`` (grids, bands, dates, tiles, sizes) and ``ParcelStore.to_xarray``."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import xarray as xr
import zarr
from parcelzarr.stores import StoreHandle
from zarr.core.sync import sync

from parcelzarr._catalogue import Catalogue, GridInfo, band_array
from parcelzarr._footprint import FOOTPRINT_ATTR, covered_mask

__all__ = ["grid_dataset", "store_info"]


def store_info(handle: StoreHandle, root: zarr.Group, catalogue: Catalogue, *,
               sizes: bool = True) -> dict[str, Any]:
    """See :meth:`ParcelStore.info`."""
    manifest = handle.read_json("parcelzarr-manifest.json") or {}
    out: dict[str, Any] = {"url": handle.url, "grids": {}}
    for name, g in catalogue.grids.items():
        s = g.spec
        tiles = sorted({k[len(name) + 1:].rsplit("/", 1)[-1]
                        for k in manifest.get("sources", {}) if k.startswith(name + "/")})
        bands: dict[str, Any] = {}
        for b, i in g.bands.items():
            arr = band_array(root, name, b)
            bands[b] = {"dtype": str(i.dtype), "nodata": i.nodata,
                        "scale_factor": i.scale_factor, "add_offset": i.add_offset,
                        "object_shape": list(arr.shards or arr.chunks),
                        "chunk_shape": list(arr.chunks)}
            if sizes:
                n, nbytes = _stored(handle, f"{name}/{b}/")
                bands[b] |= {"objects": n, "stored_bytes": nbytes}
        out["grids"][name] = {
            "crs": s.crs.to_string(),
            "resolution": [s.res_x, s.res_y],
            "shape": [s.height, s.width],
            "bounds": list(s.bounds),
            "chunks": [s.chunk_y, s.chunk_x],
            "bands": bands,
            "times": [str(t) for t in g.times],
            "tiles": tiles,
        }
        if sizes:
            out["grids"][name]["stored_bytes"] = sum(v["stored_bytes"] for v in bands.values())
    return out


def _stored(handle: StoreHandle, prefix: str) -> tuple[int, int]:
    """Chunk objects (or shards) and their bytes stored under ``prefix``."""
    store = handle.store

    async def measure() -> tuple[int, int]:
        # chunk objects only: the array's own metadata document is not data
        keys = [k async for k in store.list_prefix(prefix)
                if k.rsplit("/", 1)[-1] != "zarr.json"]
        sem = asyncio.Semaphore(32)

        async def size(key: str) -> int:
            async with sem:
                return int(await store.getsize(key))

        sizes = await asyncio.gather(*(size(k) for k in keys))
        return len(keys), int(sum(sizes))

    return sync(measure())


def grid_dataset(handle: StoreHandle, catalogue: Catalogue, grid: str | None) -> xr.Dataset:
    """See :meth:`ParcelStore.to_xarray`."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if grid is None:
        if len(catalogue.grids) != 1:
            raise ValueError(f"the store has grids {list(catalogue.grids)}: name one (grid=...)")
        grid = next(iter(catalogue.grids))
    if grid not in catalogue.grids:
        raise KeyError(f"no grid {grid!r}; the store has {list(catalogue.grids)}")
    ds = xr.open_zarr(handle.store, group=grid, consolidated=True)
    ds.attrs.pop(FOOTPRINT_ATTR, None)
    info = catalogue.grids[grid]
    for band in info.bands:
        if info.footprints is None or info.bands[band].nodata is not None:
            continue  # nodata marks uncovered pixels already
        ds[band] = ds[band].where(
            xr.DataArray(_covered_lazy(info, band, ds[band].data.chunks),
                         dims=ds[band].dims))
    order = np.argsort(ds["time"].values, kind="stable")
    if (order != np.arange(order.size)).any():  # dates are stored in ingest order
        ds = ds.isel(time=order)
    return ds


def _covered_lazy(info: GridInfo, band: str, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """A lazy (dask) boolean ``(time, y, x)`` array: pixels a source of ``band`` covers."""
    import dask.array as da

    def block(block_info: Any = None) -> np.ndarray:
        (t0, t1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        rows, cols = np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :]
        return np.stack([covered_mask(info.source_windows(band, t), rows, cols)
                         for t in range(t0, t1)]).reshape(t1 - t0, y1 - y0, x1 - x0)

    return da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.array((), dtype=bool))
