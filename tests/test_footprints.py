"""Layers without nodata, padding and overlaps: no pixel is lost or invented (issue 8, 1-2).

Oracles: the source GeoTIFFs read with rasterio and reduced with numpy (a mosaic built
independently with the documented overlap rule: at every pixel the valid pixel of the source
whose file or tile name sorts first wins).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from rasterio.features import geometry_mask

import parcelzarr as pz
from tests._rasters import SHARED_DATA, write_tif

SLO = SHARED_DATA / "eo-learn-slovenia"
ABER = SHARED_DATA / "rsgislib-aber"

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not found")


def _stored(url: str, band: str) -> xr.DataArray:
    """The band as the store's xarray view gives it (uncovered pixels are NaN)."""
    ds = pz.open_store(url).to_xarray()
    return ds[band]


def _source_window(ds: xr.DataArray, path: Path) -> tuple[slice, slice]:
    with rasterio.open(path) as src:
        b = src.bounds
    xs, ys = ds.x.values, ds.y.values
    cols = np.flatnonzero((xs > b.left) & (xs < b.right))
    rows = np.flatnonzero((ys > b.bottom) & (ys < b.top))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


@pytest.mark.parametrize("order", ["ndvi-first", "clm-first"])
def test_layer_without_nodata_joins_existing_dates_intact(tmp_path: Path, order: str) -> None:
    """eo-learn's 68-date CLM (uint8, no nodata) ingested beside the NDVI of the same dates:
    every stored value equals the source, and nothing outside the source is data."""
    times = json.loads((SLO / "timestamps.json").read_text())
    url = str(tmp_path / "s.zarr")
    layers = [("NDVI", SLO / "NDVI_68dates.tif"), ("CLM", SLO / "CLM_68dates.tif")]
    if order == "clm-first":
        layers.reverse()
    for band, path in layers:
        report = pz.ingest(path, url, band=band, times=times, quiet=True)
        assert report.sources_written == 68
    again = pz.ingest(SLO / "CLM_68dates.tif", url, band="CLM", times=times, quiet=True)
    assert again.sources_written == 0
    for band, path in layers:
        da = _stored(url, band)
        rows, cols = _source_window(da, path)
        with rasterio.open(path) as src:
            expect = src.read().astype(np.float64)
            nodata = src.nodata
        got = da.values[:, rows, cols]
        if nodata is None and band == "CLM":
            assert expect.sum() == 271_633  # the file, as published
        np.testing.assert_array_equal(got, np.where(np.isnan(expect), np.nan, expect))
        outside = np.ones(da.shape[1:], dtype=bool)
        outside[rows, cols] = False
        assert np.isnan(da.values[:, outside]).all(), f"{band}: data invented outside source"


@pytest.mark.parametrize("order", ["cls-first", "s2-first"])
def test_padding_is_not_data_on_rasters_without_nodata(tmp_path: Path, order: str) -> None:
    """rsgislib's Aberystwyth S2 (uint16, no nodata) with its classification raster: the
    region-of-interest parcel crosses the raster edge; count/mean/min/max/std equal numpy on
    the source's pixels (rasterstats would count the outside cells: its issue #105)."""
    url = str(tmp_path / "a.zarr")
    steps = [(ABER / "sen2_20210527_aber_cls.tif", "cls"),
             (ABER / "sen2_20210527_aber_rebuilt.tif", "S2")]
    if order == "s2-first":
        steps.reverse()
    for path, band in steps:
        pz.ingest(path, url, band=band, time="2021-05-27", quiet=True)
    parcels = gpd.read_file(ABER / "aber_osgb_region_of_interest.geojson")
    store = pz.open_store(url)
    df = store.zonal_stats(parcels, bands=["S2_1", "S2_4", "cls"],
                           stats=["count", "mean", "min", "max", "std", "median"])
    for band, path, bidx in (("S2_1", ABER / "sen2_20210527_aber_rebuilt.tif", 1),
                             ("S2_4", ABER / "sen2_20210527_aber_rebuilt.tif", 4),
                             ("cls", ABER / "sen2_20210527_aber_cls.tif", 1)):
        with rasterio.open(path) as src:
            geom = parcels.to_crs(src.crs).geometry.iloc[0]
            inside = ~geometry_mask([geom], out_shape=src.shape, transform=src.transform)
            values = src.read(bidx).astype(np.float64)
            ok = inside if src.nodata is None else inside & (values != src.nodata)
        v = values[ok]
        row = df[df.band == band].iloc[0]
        assert row["count"] == v.size
        if band == "S2_1":
            assert v.size == 647_280
        np.testing.assert_allclose(
            [row["mean"], row["min"], row["max"], row["std"], row["median"]],
            [v.mean(), v.min(), v.max(), v.std(), np.median(v)], rtol=1e-9)


def _codes(shape: tuple[int, int], seed: int) -> np.ndarray:
    """uint8 codes in which every value, 0 included, is a valid class."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape).astype(np.uint8)


def test_every_code_valid_layer_counts_only_source_pixels(tmp_path: Path) -> None:
    """A uint8 layer without nodata whose codes include 0, in a grid padded to its chunks:
    counts and class shares of edge-crossing parcels are those of the source pixels only."""
    origin = (300_020.0, 4_500_040.0)
    data = _codes((300, 280), 1)
    path = write_tif(tmp_path / "codes.tif", data, origin=origin, nodata=None)
    url = str(tmp_path / "c.zarr")
    pz.ingest(path, url, band="codes", time="2021-01-01", quiet=True)
    x0, y0 = origin
    parcels = gpd.GeoDataFrame(geometry=[
        shapely.box(x0 - 500, y0 - 800, x0 + 300, y0 - 200),          # crosses the west edge
        shapely.box(x0 + 2500, y0 - 3200, x0 + 3100, y0 - 2700),      # crosses the SE corner
        shapely.box(x0 + 100, y0 - 500, x0 + 900, y0 - 100),          # inside
    ], crs="EPSG:32616")
    store = pz.open_store(url)
    stats = store.zonal_stats(parcels, stats=["count", "sum", "nodata"])
    classes = store.zonal_stats(parcels, categorical=True)
    with rasterio.open(path) as src:
        transform = src.transform
    for i, geom in enumerate(parcels.geometry):
        inside = ~geometry_mask([geom], out_shape=data.shape, transform=transform)
        v = data[inside].astype(np.int64)
        row = stats.iloc[i]
        assert (row["count"], row["sum"]) == (v.size, v.sum())
        got = classes[classes.parcel_id == i]
        expect = dict(zip(*np.unique(v, return_counts=True), strict=True))
        assert dict(zip(got["class"], got["count"], strict=True)) == expect
        assert got["fraction"].sum() == pytest.approx(1.0)


def _mosaic(tiles: Sequence[tuple[str, np.ndarray, tuple[float, float]]],
            nodata: float | None, shape: tuple[int, int], origin: tuple[float, float]
            ) -> np.ndarray:
    """Expected store content (float, NaN = no data): smallest name wins where valid."""
    out = np.full(shape, np.nan)
    for _name, arr, (x, y) in sorted(tiles, key=lambda t: t[0]):
        r, c = round((origin[1] - y) / 10), round((x - origin[0]) / 10)
        view = out[r:r + arr.shape[0], c:c + arr.shape[1]]
        a = arr.astype(np.float64)
        valid = ~np.isnan(a) if nodata is None else (a != nodata) & ~np.isnan(a)
        take = np.isnan(view) & valid
        view[take] = a[take]
    return out


def _splits(names: Sequence[str]) -> list[list[list[str]]]:
    """Every way to ingest ``names`` in some order, split into consecutive runs."""
    out = []
    for perm in itertools.permutations(names):
        for cuts in itertools.product([False, True], repeat=len(perm) - 1):
            runs, cur = [], [perm[0]]
            for name, cut in zip(perm[1:], cuts, strict=True):
                if cut:
                    runs.append(cur)
                    cur = []
                cur.append(name)
            runs.append(cur)
            out.append(runs)
    return out


@pytest.mark.parametrize(("dtype", "nodata"), [("uint8", None), ("uint16", 0),
                                               ("float32", None), ("float32", -9999.0)])
def test_overlap_rule_independent_of_order_and_runs(tmp_path: Path, dtype: str,
                                                    nodata: float | None) -> None:
    """Three overlapping tiles of one date with different values (and nodata holes where the
    layer has nodata), ingested in every order and every split into runs: every store equals
    the numpy mosaic, pixel for pixel."""
    rng = np.random.default_rng(7)
    origin = (300_020.0, 4_500_040.0)
    specs = {"a.tif": (0, 0), "b.tif": (40, 30), "c.tif": (70, 10)}  # (row, col) offsets
    tiles = []
    for name, (r, c) in specs.items():
        arr = rng.integers(0, 50, size=(120, 110)).astype(dtype)
        if nodata is not None:
            arr[rng.random(arr.shape) < 0.3] = nodata  # holes the next tile must fill
        elif dtype.startswith("float"):
            arr[rng.random(arr.shape) < 0.1] = np.nan
        xy = (origin[0] + c * 10, origin[1] - r * 10)
        write_tif(tmp_path / name, arr, origin=xy, nodata=nodata)
        tiles.append((name, arr, xy))
    expect = _mosaic(tiles, nodata, (190, 140), origin)
    when = datetime(2021, 6, 1)
    for k, runs in enumerate(_splits(sorted(specs))):
        url = str(tmp_path / f"s{k}.zarr")
        for run in runs:
            pz.ingest([tmp_path / n for n in run], url, band="L", time=when, quiet=True)
        da = _stored(url, "L")
        r, c = _source_window(da, tmp_path / "a.tif")
        got = da.values[0, r.start:r.start + 190, c.start:c.start + 140]
        np.testing.assert_array_equal(got, expect, err_msg=f"runs {runs}")


def test_dataset_mask_cells_are_no_data(tmp_path: Path) -> None:
    """rasterstats' dataset_mask.tif declares no nodata but masks cells with a mask band:
    masked cells are no data, as rasterstats (and GDAL) read them; published counts [75, 0]."""
    from rasterstats import zonal_stats

    folder = SHARED_DATA / "rasterstats"
    url = str(tmp_path / "m.zarr")
    pz.ingest(folder / "dataset_mask.tif", url, band="m", time="2020-01-01", quiet=True)
    store = pz.open_store(url)
    for name in ("polygons.shp", "polygons_no_overlap.shp"):
        df = store.zonal_stats(gpd.read_file(folder / name), stats=["count", "sum"])
        with pytest.warns(UserWarning, match="dataset mask"):
            ref = zonal_stats(str(folder / name), str(folder / "dataset_mask.tif"),
                              stats=["count", "sum"])
        assert list(df["count"]) == [r["count"] for r in ref]
        assert list(df["sum"].fillna(0)) == [r["sum"] or 0 for r in ref]
        if name == "polygons.shp":
            assert list(df["count"]) == [75, 0]


def test_time_axis_in_date_order_whatever_the_ingest_order(tmp_path: Path) -> None:
    """Dates ingested latest first still come out of to_xarray() in time order, and
    time slices select them."""
    data = {d: np.full((50, 40), i + 1, dtype=np.uint16) for i, d in
            enumerate(["2021-06-25", "2021-06-15", "2021-07-05"])}
    url = str(tmp_path / "t.zarr")
    for d, arr in data.items():
        pz.ingest(write_tif(tmp_path / f"{d}.tif", arr), url, band="L", time=d, quiet=True)
    ds = pz.open_store(url).to_xarray()
    times = [str(t)[:10] for t in ds.time.values]
    assert times == sorted(data)
    sub = ds["L"].sel(time=slice("2021-06-20", "2021-07-01"))
    assert [str(t)[:10] for t in sub.time.values] == ["2021-06-25"]
    assert float(sub.max()) == 1.0
