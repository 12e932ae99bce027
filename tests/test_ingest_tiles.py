"""Several tiles, zones, resolutions and dates; growth west/north; idempotent re-runs.

Oracles are independent of parcelzarr: rasterio reads of the sources merged with numpy under
the documented overlap rule (first valid pixel wins; the earlier-ingested, then lexically
first, tile wins), rasterio's ``geometry_mask`` for parcels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import shapely
import xarray as xr
from rasterio.features import geometry_mask
from rasterio.transform import from_origin

import parcelzarr as pz

from ._rasters import scene_data, write_tif

DATES = ("20240615T165849", "20240620T165851")
BANDS = {"B04": 10, "B05": 20}
TILES = {  # name: (crs, top-left corner on the 60 m grid, size in 10 m pixels)
    "T16TBK": ("EPSG:32616", (300_000.0, 4_500_000.0), 360),
    "T16TCK": ("EPSG:32616", (297_000.0, 4_501_500.0), 360),  # north-west of T16TBK, overlaps
    "T17TKE": ("EPSG:32617", (500_040.0, 4_400_040.0), 300),
}


def make_tiles(folder: Path) -> dict[str, list[Path]]:
    """Sentinel-2 named files per tile: every date and band."""
    out: dict[str, list[Path]] = {}
    for k, (tile, (crs, origin, size)) in enumerate(TILES.items()):
        paths = []
        for d, date in enumerate(DATES):
            for b, (band, res) in enumerate(BANDS.items()):
                n = size * 10 // res
                data = scene_data((n, n), seed=100 * k + 10 * d + b)
                paths.append(write_tif(folder / f"{tile}_{date}_{band}_{res}m.tif", data,
                                       origin=origin, res=float(res), crs=crs, block=64))
        out[tile] = paths
    return out


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return make_tiles(tmp_path_factory.mktemp("tiles"))


def object_stamps(url: str, opts: dict[str, Any] | None) -> dict[str, Any]:
    """Every object of a store with its modification stamp (mtime or etag)."""
    if url.startswith("az://"):
        fs = fsspec.filesystem("az", skip_instance_cache=True, **(opts or {}))
        return {p: (i.get("etag"), i.get("last_modified"))
                for p, i in fs.find(url[5:], detail=True).items()}
    out = {}
    for root, _dirs, files in os.walk(url):
        for f in files:
            p = os.path.join(root, f)
            try:  # a concurrent writer's temporary files come and go
                out[p] = os.stat(p).st_mtime_ns
            except FileNotFoundError:
                continue
    return out


def _expected(ds: xr.Dataset, band: str, date: str, tiles: list[str],
              files: dict[str, list[Path]]) -> np.ndarray:
    """The grid's band at ``date`` merged from the sources with numpy: first valid wins."""
    x, y = ds.x.values, ds.y.values
    res = float(x[1] - x[0])
    canvas = np.zeros((y.size, x.size), dtype="uint16")
    for tile in tiles:  # priority order
        path = next(p for p in files[tile] if f"_{date}_{band}_" in p.name)
        with rasterio.open(path) as src:
            data = src.read(1)
            c0 = round((src.bounds.left - (x[0] - res / 2)) / res)
            r0 = round(((y[0] + res / 2) - src.bounds.top) / res)
        view = canvas[r0:r0 + data.shape[0], c0:c0 + data.shape[1]]
        assert view.shape == data.shape
        take = (view == 0) & (data != 0)
        view[take] = data[take]
    return canvas


def test_tiles_zones_resolutions_growth_and_rerun(
    tiles: dict[str, list[Path]], store_url: tuple[str, Any]
) -> None:
    url, opts = store_url
    first = pz.ingest([str(p) for p in tiles["T16TBK"]], url, storage_options=opts,
                      quiet=True, chunk_size=64)
    assert first.sources_written == 4
    before = pz.open_store(url, storage_options=opts)
    x0_before = before.grids["utm16n/10m"].spec.x0
    y0_before = before.grids["utm16n/10m"].spec.y0

    # The second tile lies north-west: the grid grows west and north.
    rest = [str(p) for t in ("T16TCK", "T17TKE") for p in tiles[t]]
    second = pz.ingest(rest, url, storage_options=opts, quiet=True, workers=2)
    assert second.sources_written == 8
    store = pz.open_store(url, storage_options=opts)
    assert sorted(store.grids) == ["utm16n/10m", "utm16n/20m", "utm17n/10m", "utm17n/20m"]
    spec = store.grids["utm16n/10m"].spec
    assert spec.x0 < x0_before
    assert spec.y0 > y0_before

    order = {"utm16n": ["T16TBK", "T16TCK"], "utm17n": ["T17TKE"]}
    for grid, info in store.grids.items():
        ds = xr.open_zarr(store._handle.store, group=grid, mask_and_scale=False)
        assert ds.rio.crs.to_epsg() == (32616 if grid.startswith("utm16n") else 32617)
        assert list(info.bands) == [b for b, r in BANDS.items() if grid.endswith(f"/{r}m")]
        assert ds.sizes["time"] == 2
        for band in info.bands:
            for t, date in enumerate(DATES):
                expect = _expected(ds, band, date, order[grid.split("/")[0]], tiles)
                np.testing.assert_array_equal(ds[band][t].values, expect, err_msg=f"{grid} {band}")

    # A parcel straddling the two same-zone tiles reads as one.
    parcel = shapely.Polygon([(299_310, 4_499_650), (300_480, 4_499_820), (300_610, 4_498_930),
                              (299_420, 4_498_770)])
    gdf = gpd.GeoDataFrame({"pid": ["straddle"]}, geometry=[parcel], crs="EPSG:32616")
    df = store.zonal_stats(gdf, bands=["B04", "B05"], stats=("count", "mean", "min", "max",
                                                              "median"), id_column="pid")
    assert len(df) == 4
    for grid, band in (("utm16n/10m", "B04"), ("utm16n/20m", "B05")):
        ds = xr.open_zarr(store._handle.store, group=grid, mask_and_scale=False)
        res = float(ds.x[1] - ds.x[0])
        transform = from_origin(float(ds.x[0]) - res / 2, float(ds.y[0]) + res / 2, res, res)
        for t, date in enumerate(DATES):
            canvas = _expected(ds, band, date, order["utm16n"], tiles)
            inside = ~geometry_mask([parcel], out_shape=canvas.shape, transform=transform)
            vals = canvas[inside]
            vals = vals[vals != 0].astype(float)
            row = df[(df.band == band) & (df.time == np.datetime64(ds.time.values[t]))].iloc[0]
            assert row["count"] == vals.size > 0
            assert row["mean"] == pytest.approx(vals.mean())
            assert row["min"] == vals.min()
            assert row["max"] == vals.max()
            assert row["median"] == pytest.approx(np.median(vals))
            # both tiles contribute to this parcel
            with rasterio.open(next(p for p in tiles["T16TCK"] if f"_{date}_{band}_" in
                                    p.name)) as src:
                assert src.bounds.right < parcel.bounds[2]

    # Re-running everything is a no-op: nothing written, nothing rewritten.
    stamps = object_stamps(url, opts)
    again = pz.ingest([str(p) for t in tiles for p in tiles[t]], url, storage_options=opts,
                      quiet=True)
    assert again.sources_written == 0
    assert again.sources_skipped == 12
    assert again.bytes_written == 0
    assert "nothing to do" in str(again)
    assert object_stamps(url, opts) == stamps


def test_new_band_and_new_dates_append_without_rewriting(tmp_path: Path) -> None:
    first = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif", scene_data((300, 300), 1))
    url = str(tmp_path / "append.zarr")
    pz.ingest([str(first)], url, quiet=True, chunk_size=64)
    stamps = object_stamps(url, None)
    later = [write_tif(tmp_path / f"T16TBK_20240611T100000_{b}_10m.tif",
                       scene_data((300, 300), k + 2)) for k, b in enumerate(("B04", "B08"))]
    report = pz.ingest([str(first), *map(str, later)], url, quiet=True)
    assert report.sources_written == 2
    assert report.sources_skipped == 1
    now = object_stamps(url, None)
    date0 = [k for k in stamps if "/B04/c/0/" in k]
    assert date0
    assert all(now[k] == stamps[k] for k in date0)  # the first date was not rewritten
    ds = xr.open_zarr(url, group="utm16n/10m", mask_and_scale=False)
    assert ds.sizes["time"] == 2
    assert (ds.B08[0].values == 0).all()  # B08 has no first date
    for t, path, band in ((0, first, "B04"), (1, later[0], "B04"), (1, later[1], "B08")):
        with rasterio.open(path) as src:
            c0 = round((src.bounds.left - (float(ds.x[0]) - 5)) / 10)
            r0 = round(((float(ds.y[0]) + 5) - src.bounds.top) / 10)
            np.testing.assert_array_equal(ds[band][t].values[r0:r0 + 300, c0:c0 + 300],
                                          src.read(1))
