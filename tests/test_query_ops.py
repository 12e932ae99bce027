"""exactextract's operation names, checked against exactextract (coverage weights) and
rasterstats (pixel-centre rule) on the source GeoTIFFs of ../shared/data (the weighted
operations: tests/test_query_weighted.py)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from exactextract import exact_extract
from exactextract.raster import RasterioRasterSource
from parcelzarr.query._stats import parse_stats
from rasterstats import zonal_stats as rs_zonal_stats

import parcelzarr as pz

from ._rasters import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not available")
EO = SHARED_DATA / "eo-learn-slovenia"
SM = SHARED_DATA / "sao-miguel"
#: ours -> exactextract's op and column
MOMENTS = {"stdev": "stdev", "variance": "variance",
           "coefficient_of_variation": "coefficient_of_variation",
           "quantile_0.9": "quantile(q=0.9)", "quantile_0.25": "quantile(q=0.25)"}
MODES = ("majority", "minority", "variety")


def _ee(path: str, band: int, geoms: gpd.GeoSeries, ops: list[str]) -> pd.DataFrame:
    gdf = gpd.GeoDataFrame(geometry=geoms.reset_index(drop=True))
    with rasterio.open(path) as ds:
        return exact_extract(RasterioRasterSource(ds, band_idx=band), gdf, ops,
                             output="pandas")


@pytest.fixture(scope="module")
def ndvi_store(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    times = json.loads((EO / "timestamps.json").read_text())
    url = str(tmp_path_factory.mktemp("ops") / "eo.zarr")
    pz.ingest(str(EO / "NDVI_68dates.tif"), url, band="NDVI", times=times, quiet=True,
              chunk_size=32)
    return pz.open_store(url)


@pytest.fixture(scope="module")
def clc_store(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    url = str(tmp_path_factory.mktemp("ops") / "clc.zarr")
    pz.ingest(str(SM / "clc2018_v2020_20u1.tif"), url, band="clc", time="2018-01-01",
              quiet=True, chunk_size=64)
    return pz.open_store(url)


@pytest.mark.parametrize("band", [1, 40, 68])
def test_moment_and_quantile_names_equal_exactextract(ndvi_store: pz.ParcelStore,
                                                      band: int) -> None:
    parcels = gpd.read_file(EO / "LULC.gpkg")
    when = json.loads((EO / "timestamps.json").read_text())[band - 1]
    ours = ndvi_store.zonal_stats(parcels, stats=[*MOMENTS, "std", "mean"], time=[when],
                                  weights="coverage")
    ops = list(MOMENTS.values())
    theirs = _ee(str(EO / "NDVI_68dates.tif"), band, parcels.geometry, ops)
    for ours_name, op in MOMENTS.items():
        col = op if "(" not in op else "quantile_" + op.split("=0.")[1].rstrip(")").ljust(2, "0")
        np.testing.assert_allclose(ours[ours_name].to_numpy(float), theirs[col].to_numpy(float),
                                   rtol=1e-5, atol=1e-7, equal_nan=True, err_msg=ours_name)
    # exactextract's stdev is the population one, as rasterstats' std: both names agree
    np.testing.assert_array_equal(ours["stdev"], ours["std"])


def test_mode_names_equal_exactextract_on_land_cover(clc_store: pz.ParcelStore) -> None:
    parcels = gpd.read_file(SM / "concelhos.gpkg")
    with rasterio.open(SM / "clc2018_v2020_20u1.tif") as ds:
        crs = ds.crs
    ours = clc_store.zonal_stats(parcels, stats=list(MODES), weights="coverage")
    theirs = _ee(str(SM / "clc2018_v2020_20u1.tif"), 1, parcels.geometry.to_crs(crs),
                 list(MODES))
    for name in MODES:
        np.testing.assert_array_equal(ours[name].to_numpy(float),
                                      theirs[name].to_numpy(float), err_msg=name)


def test_mode_names_equal_rasterstats_with_the_centre_rule(clc_store: pz.ParcelStore) -> None:
    parcels = gpd.read_file(SM / "concelhos.gpkg")
    path = str(SM / "clc2018_v2020_20u1.tif")
    with rasterio.open(path) as ds:
        crs = ds.crs
    ours = clc_store.zonal_stats(parcels, stats=list(MODES))
    theirs = rs_zonal_stats(parcels.geometry.to_crs(crs), path,
                            stats=["majority", "minority", "unique"])
    np.testing.assert_array_equal(ours["majority"], [t["majority"] for t in theirs])
    np.testing.assert_array_equal(ours["minority"], [t["minority"] for t in theirs])
    np.testing.assert_array_equal(ours["variety"], [t["unique"] for t in theirs])


def test_unknown_names_list_both_vocabularies() -> None:
    with pytest.raises(ValueError, match=r"coefficient_of_variation.*quantile_Q"):
        parse_stats("quantile_1.5")
    assert parse_stats("stdev,quantile_0.9").percentiles == (90.0,)


@pytest.mark.parametrize("frac", [0.5, 1.0])
def test_min_coverage_frac_equals_exactextract(ndvi_store: pz.ParcelStore, frac: float) -> None:
    parcels = gpd.read_file(EO / "LULC.gpkg")
    when = json.loads((EO / "timestamps.json").read_text())[39]
    stats = {"count": "count", "mean": "mean", "stdev": "stdev", "min": "min", "max": "max",
             "median": "median"}
    ours = ndvi_store.zonal_stats(parcels, stats=list(stats), time=[when], weights="coverage",
                                  min_coverage_frac=frac)
    theirs = _ee(str(EO / "NDVI_68dates.tif"), 40, parcels.geometry,
                 [f"{op}(min_coverage_frac={frac})" for op in stats.values()])
    every = ndvi_store.zonal_stats(parcels, stats=["count"], time=[when], weights="coverage")
    assert (ours["count"] < every["count"]).any()  # the threshold leaves pixels out
    for name, op in stats.items():
        np.testing.assert_allclose(ours[name].to_numpy(float), theirs[op].to_numpy(float),
                                   rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


def test_min_coverage_frac_is_checked(ndvi_store: pz.ParcelStore) -> None:
    parcels = gpd.read_file(EO / "LULC.gpkg").iloc[:2]
    with pytest.raises(ValueError, match="needs weights='coverage'"):
        ndvi_store.zonal_stats(parcels, time="2016-01", min_coverage_frac=0.5)
    with pytest.raises(ValueError, match="above 0, at most 1"):
        ndvi_store.zonal_stats(parcels, time="2016-01", weights="coverage",
                               min_coverage_frac=1.5)


def test_frac_equals_exactextract_on_land_cover(clc_store: pz.ParcelStore) -> None:
    parcels = gpd.read_file(SM / "concelhos.gpkg")
    with rasterio.open(SM / "clc2018_v2020_20u1.tif") as ds:
        crs = ds.crs
    ours = clc_store.zonal_stats(parcels, stats="frac", weights="coverage")
    theirs = _ee(str(SM / "clc2018_v2020_20u1.tif"), 1, parcels.geometry.to_crs(crs),
                 ["unique", "frac"])
    for i, row in theirs.iterrows():
        mine = ours[ours["parcel_id"] == i].set_index("class")["frac"]
        expected = pd.Series(np.asarray(row["frac"], float), index=np.asarray(row["unique"], int))
        assert sorted(mine.index) == sorted(expected.index), i
        np.testing.assert_allclose(mine.loc[expected.index], expected, rtol=1e-5, atol=1e-9)


def test_frac_alone_and_weighted_frac_by_a_layer_equal_exactextract(
        clc_store: pz.ParcelStore) -> None:
    """weighted_frac weighs by a weighting raster (here the land-cover codes themselves, a
    raster exactextract takes as weights as well); tests/test_query_weighted.py weighs by
    population. frac and weighted_frac have one row per class: they mix with nothing else."""
    parcels = gpd.read_file(SM / "concelhos.gpkg")
    with pytest.raises(ValueError, match="cannot be mixed with mean"):
        clc_store.zonal_stats(parcels.iloc[:1], stats=["frac", "mean"])
    with pytest.raises(ValueError, match="weights_band="):
        clc_store.zonal_stats(parcels.iloc[:1], stats=["weighted_frac"])
    with rasterio.open(SM / "clc2018_v2020_20u1.tif") as ds:
        crs = ds.crs
        gdf = gpd.GeoDataFrame(geometry=parcels.geometry.to_crs(crs).reset_index(drop=True))
        src = RasterioRasterSource(ds, band_idx=1)
        theirs = exact_extract(src, gdf, ["unique", "weighted_frac"], weights=src,
                               output="pandas")
    ours = clc_store.zonal_stats(parcels, bands=["clc"], stats="weighted_frac",
                                 weights="coverage", weights_band="clc")
    for i, row in theirs.iterrows():
        mine = ours[ours["parcel_id"] == i].set_index("class")["weighted_frac"]
        expected = pd.Series(np.asarray(row["weighted_frac"], float),
                             index=np.asarray(row["unique"], int))
        assert sorted(mine.index) == sorted(expected.index), i
        np.testing.assert_allclose(mine.loc[expected.index], expected, rtol=1e-5, atol=1e-9)
