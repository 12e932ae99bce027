"""Ingest parameters are checked up front (issue 9, items 13 and 14): layer names, chunk and
shard edges, time zones; and south-up rasters are read right.

Oracles: rasterio (sampling the source at the store's pixel centres), rasterstats' published
values on its own slope.tif, pandas for time-zone conversion.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner
from rasterio.transform import Affine

import parcelzarr as pz
from parcelzarr._dates import parse_time
from parcelzarr.cli import main

from ._rasters import CRS, ORIGIN, SHARED_DATA, scene_data, write_tif

RS = SHARED_DATA / "rasterstats"


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    return write_tif(tmp_path / "layer.tif", scene_data((70, 90), 5))


def _ingest_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["ingest", *args, "--quiet"])
    return res.exit_code, res.output


@pytest.mark.parametrize("name", ["time", "x", "Y", "spatial_ref", "inside", "parcelzarr",
                                  "parcelzarr-manifest", "a/b", "../up", "a b", "7days", "-x",
                                  "", "é", "n" * 65, "a" * 300])
def test_bad_layer_names_are_refused_before_anything_is_written(
        tif: Path, tmp_path: Path, name: str) -> None:
    store = tmp_path / "s.zarr"
    code, out = _ingest_cli(str(tif), "--store", str(store), "--band", name, "--time",
                            "2024-01-01")
    assert code == 2, out
    assert out.startswith("error: layer name") and out.count("\n") == 1, out
    assert "reserved" in out or "not a valid name" in out
    assert len(out) < 300
    assert not store.exists()


@pytest.mark.parametrize("name", ["worldcover", "CDL_2024", "ndvi-s2", "B8A", "n" * 64])
def test_good_layer_names_are_stored(tif: Path, tmp_path: Path, name: str) -> None:
    store = tmp_path / "s.zarr"
    code, out = _ingest_cli(str(tif), "--store", str(store), "--band", name, "--time",
                            "2024-01-01")
    assert code == 0, out
    assert pz.open_store(str(store)).bands == [name]


def test_multiband_descriptions_that_cannot_name_a_layer_fall_back(tmp_path: Path) -> None:
    data = np.stack([scene_data((40, 50), 1), scene_data((40, 50), 2)])
    path = tmp_path / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=50, height=40, count=2,
                       dtype="uint16", crs=CRS, nodata=0,
                       transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])) as ds:
        ds.write(data)
        ds.set_band_description(1, "NIR (842 nm)")
        ds.set_band_description(2, "time")
    url = str(tmp_path / "s.zarr")
    pz.ingest(str(path), url, band="S", time="2024-01-01", quiet=True)
    ds = pz.open_store(url).to_xarray()
    assert sorted(ds.data_vars) == ["S_1", "S_2"]
    for i, name in enumerate(["S_1", "S_2"]):
        np.testing.assert_array_equal(_at_source_pixels(ds[name], path), data[i])


def _at_source_pixels(var: xr.DataArray, src: Path) -> np.ndarray:
    """The stored values at the source's pixel centres (nodata as 0), first date."""
    with rasterio.open(src) as ds:
        t, h, w = ds.transform, ds.height, ds.width
    x = t.c + (np.arange(w) + 0.5) * t.a
    y = t.f + (np.arange(h) + 0.5) * t.e
    got = var.isel(time=0).sel(x=x, y=y, method="nearest", tolerance=abs(t.a) / 4)
    return got.fillna(0).to_numpy()


@pytest.mark.parametrize(("args", "message"), [
    (["--inner-chunk", "0"], "inner_chunk (--inner-chunk) must be between 1"),
    (["--chunk", "-5"], "chunk_size (--chunk) must be between 1"),
    (["--chunk", "0"], "chunk_size (--chunk) must be between 1"),
    (["--chunk", "256", "--inner-chunk", "100"], "must divide the object edge 256"),
    (["--chunk", "64", "--inner-chunk", "128"], "must divide the object edge 64"),
    (["--workers", "0"], "workers (--workers) must be between 1"),
])
def test_chunk_shard_and_worker_sizes_are_checked(tif: Path, tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    store = tmp_path / "s.zarr"
    code, out = _ingest_cli(str(tif), "--store", str(store), "--band", "v", "--time",
                            "2024-01-01", *args)
    assert code == 2, out
    assert message in out and out.count("\n") == 1, out
    assert not store.exists()


def test_valid_shards_still_work(tif: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    code, out = _ingest_cli(str(tif), "--store", str(store), "--band", "v", "--time",
                            "2024-01-01", "--chunk", "64", "--inner-chunk", "32")
    assert code == 0, out
    with rasterio.open(tif) as src:
        expected = src.read(1)
    got = xr.open_zarr(store, group="utm16n/10m", mask_and_scale=False)["v"]
    assert got.encoding["chunks"] == (1, 32, 32)
    np.testing.assert_array_equal(_at_source_pixels(got, tif), expected)


@pytest.mark.parametrize("text", ["2024-06-15T03:00:00+05:00", "2024-06-14T17:30-04:30",
                                  "2024-06-15T00:00:00Z", "2024-06-15T02:00:00+02:00"])
def test_time_with_an_offset_is_converted_to_utc(text: str, tif: Path, tmp_path: Path) -> None:
    expected = pd.Timestamp(text).tz_convert("UTC").tz_localize(None).to_pydatetime()
    assert parse_time(text) == expected
    store = tmp_path / "s.zarr"
    code, out = _ingest_cli(str(tif), "--store", str(store), "--band", "v", "--time", text)
    assert code == 0, out
    times = pz.open_store(str(store)).grids["utm16n/10m"].times
    assert times.tolist() == [np.datetime64(expected, "s")]


def _south_up_copy(src: Path, dst: Path) -> Path:
    """The same pixels stored bottom row first, with a positive pixel height."""
    with rasterio.open(src) as ds:
        data = ds.read(1)
        t = ds.transform
        profile = ds.profile | {"transform": Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * ds.height),
                                "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data[::-1], 1)
    return dst


def test_south_up_raster_is_read_exactly(tmp_path: Path) -> None:
    if not RS.exists():
        pytest.skip("shared real data not available")
    south = _south_up_copy(RS / "slope.tif", tmp_path / "slope_south_up.tif")
    url = str(tmp_path / "s.zarr")
    pz.ingest(str(south), url, band="slope", time="2020-01-01", quiet=True, chunk_size=32)
    store = pz.open_store(url)
    # every stored pixel equals what rasterio says the south-up file holds at its centre
    grid = next(iter(store.grids.values()))
    ds = store.to_xarray().isel(time=0)
    values = ds["slope"].to_numpy()
    with rasterio.open(south) as src:
        assert src.transform.e > 0
        raw = src.read(1)
        xs, ys = np.meshgrid(ds.x.to_numpy(), ds.y.to_numpy())
        rows, cols = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel())
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        expected = np.full(rows.size, np.nan)
        expected[inside] = raw[rows[inside], cols[inside]]
        expected[expected == src.nodata] = np.nan
    np.testing.assert_array_equal(values.ravel(), expected.astype(values.dtype))
    assert grid.spec.height >= 78 and inside.sum() == 84 * 78
    # and the published rasterstats values on the original (north-up) slope.tif hold
    parcels = gpd.read_file(RS / "polygons.shp").set_crs(grid.spec.crs, allow_override=True)
    df = store.zonal_stats(parcels, stats="count,mean")
    assert df["count"].tolist() == [75, 50]
    assert round(df["mean"][0], 2) == 14.66


def test_rotated_or_mirrored_rasters_are_refused_clearly(tmp_path: Path) -> None:
    data = scene_data((20, 20), 1)
    path = tmp_path / "mirrored.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1,
                       dtype="uint16", crs=CRS, nodata=0,
                       transform=Affine(-10, 0, ORIGIN[0], 0, -10, ORIGIN[1])) as ds:
        ds.write(data, 1)
    with pytest.raises(pz.errors.InvalidSourceError, match="mirrored east-west"):
        pz.ingest(str(path), str(tmp_path / "s.zarr"), band="v", time="2024-01-01",
                  quiet=True)
