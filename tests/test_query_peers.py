"""zonal_stats against the peers on real data (../shared/data): rasterstats and exactextract.

The oracles read the source GeoTIFFs themselves; parcelzarr only reads its own store. Values
the peers publish in their own test suites are checked as published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from exactextract import exact_extract
from rasterio.transform import from_origin
from rasterstats import zonal_stats

import parcelzarr as pz

from ._rasters import SHARED_DATA

DATA = SHARED_DATA
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared real data not available")

RS = DATA / "rasterstats"
STATS = ["count", "sum", "mean", "min", "max", "std", "median", "percentile_10",
         "percentile_75", "nodata"]


def _vectors(name: str) -> gpd.GeoDataFrame:
    """A rasterstats test layer, in slope.tif's CRS (multipolygons.prj wrongly says WGS 84)."""
    with rasterio.open(RS / "slope.tif") as ds:
        crs = ds.crs
    return gpd.read_file(RS / name).set_crs(crs, allow_override=True)


def _ingest(tmp: Path, src: Path, band: str, chunk: int) -> pz.ParcelStore:
    url = str(tmp / f"{src.stem}-{chunk}.zarr")
    pz.ingest(str(src), url, band=band, time="2020-01-01", quiet=True, chunk_size=chunk)
    return pz.open_store(url)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("peers")
    return {
        "slope": _ingest(tmp, RS / "slope.tif", "slope", 32),
        "slope_nodata": _ingest(tmp, RS / "slope_nodata.tif", "slope", 32),
        "all_nodata": _ingest(tmp, RS / "all_nodata.tif", "slope", 32),
        "classes": _ingest(tmp, RS / "slope_classes.tif", "cls", 16),
        "dataset_mask": _ingest(tmp, RS / "dataset_mask.tif", "slope", 32),
    }


def _rs(vectors: Any, raster: Path, stats: list[str], **kw: Any) -> pd.DataFrame:
    names = [s.replace("std", "std") for s in stats]
    return pd.DataFrame(zonal_stats(vectors, str(raster), stats=names, **kw))


def _compare(ours: pd.DataFrame, theirs: pd.DataFrame, stats: list[str]) -> None:
    for s in stats:
        a = ours[s].to_numpy(dtype=float)
        b = theirs[s].to_numpy(dtype=float)
        if s == "nodata":  # rasterstats gives None for parcels without any cell; we give 0
            a = np.where(np.isnan(b), np.nan, a)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=s)


def test_rasterstats_published_values(stores: dict[str, Any]) -> None:
    df = stores["slope"].zonal_stats(str(RS / "polygons.shp"), stats="count,mean")
    assert df["count"].tolist() == [75, 50]
    assert round(df["mean"][0], 2) == 14.66
    at = stores["slope"].zonal_stats(str(RS / "polygons.shp"), stats="count", all_touched=True)
    assert at["count"].tolist() == [95, 73]
    nd = stores["slope_nodata"].zonal_stats(str(RS / "polygons.shp"), stats="nodata,count")
    assert list(zip(nd["nodata"], nd["count"], strict=True)) == [(36, 39), (19, 31)]
    an = stores["all_nodata"].zonal_stats(str(RS / "polygons.shp"), stats="nodata,count")
    assert an["nodata"].tolist() == [75, 50]
    assert an["count"].tolist() == [0, 0]
    dm = stores["dataset_mask"].zonal_stats(str(RS / "polygons.shp"), stats="count")
    assert dm["count"].tolist() == [75, 0]
    mp = stores["slope"].zonal_stats(_vectors("multipolygons.shp"), stats="count")
    assert mp["count"].tolist() == [125]


def _compare_slope(stores: dict[str, Any], gdf: gpd.GeoDataFrame, *, all_touched: bool) -> None:
    ours = stores["slope"].zonal_stats(gdf, stats=STATS, all_touched=all_touched)
    theirs = _rs(gdf, RS / "slope.tif", STATS, all_touched=all_touched)
    if all_touched:
        # GDAL's all-touched burn of an edge running exactly along pixel edges depends on the
        # window; beyond the raster (where both count nodata) rasterstats' window and our grid
        # differ, so nodata is compared only for parcels inside the raster.
        with rasterio.open(RS / "slope.tif") as ds:
            inside = gdf.within(shapely.box(*ds.bounds)).to_numpy()
        _compare(ours[inside], theirs[inside], STATS)
        _compare(ours, theirs, [s for s in STATS if s != "nodata"])
        return
    _compare(ours, theirs, STATS)


@pytest.mark.parametrize("all_touched", [False, True])
@pytest.mark.parametrize("vectors", ["polygons.shp", "multipolygons.shp",
                                     "polygons_partial_overlap.shp", "polygons_no_overlap.shp"])
def test_every_statistic_equals_rasterstats(stores: dict[str, Any], vectors: str,
                                            all_touched: bool) -> None:
    gdf = _vectors(vectors)
    _compare_slope(stores, gdf, all_touched=all_touched)


def _odd_parcels(src: Path) -> gpd.GeoDataFrame:
    """Holes, multipolygons, slivers and sub-pixel parcels inside ``src``."""
    with rasterio.open(src) as ds:
        left, bottom, right, top = ds.bounds
        res = ds.res[0]
        crs = ds.crs
    cx, cy = (left + right) / 2, (bottom + top) / 2
    outer = shapely.box(cx - 12 * res, cy - 9 * res, cx + 10 * res, cy + 11 * res)
    hole = shapely.box(cx - 4 * res, cy - 3 * res, cx + 3.3 * res, cy + 2.7 * res)
    holed = outer.difference(hole)
    multi = shapely.MultiPolygon([
        shapely.box(left + 2.2 * res, bottom + 3.1 * res, left + 9.7 * res, bottom + 8.4 * res),
        shapely.Polygon([(right - 10.37 * res, top - 3.21 * res),
                         (right - 2.53 * res, top - 4.1 * res),
                         (right - 6.13 * res, top - 12.27 * res)]),
    ])
    sliver = shapely.Polygon([(cx - 20 * res, cy + 0.2 * res), (cx + 20 * res, cy + 0.45 * res),
                              (cx + 20 * res, cy + 0.55 * res)])
    tiny = shapely.box(cx + 0.1 * res, cy + 0.15 * res, cx + 0.6 * res, cy + 0.4 * res)
    centred = shapely.box(cx - 0.3 * res, cy - 0.3 * res, cx + 0.3 * res, cy + 0.3 * res)
    edge = shapely.box(left - 5 * res, cy, left + 6.5 * res, cy + 7.3 * res)  # crosses the edge
    rotated = shapely.affinity.rotate(shapely.box(cx, cy, cx + 15 * res, cy + 6 * res), 33)
    return gpd.GeoDataFrame(geometry=[holed, multi, sliver, tiny, centred, edge, rotated],
                            crs=crs)


@pytest.mark.parametrize("all_touched", [False, True])
def test_holes_multipolygons_slivers_subpixel_equal_rasterstats(
        stores: dict[str, Any], all_touched: bool) -> None:
    gdf = _odd_parcels(RS / "slope.tif")
    ours = stores["slope"].zonal_stats(gdf, stats=STATS, all_touched=all_touched)
    _compare(ours, _rs(gdf, RS / "slope.tif", STATS, all_touched=all_touched), STATS)


def test_coverage_weighted_equals_exactextract(stores: dict[str, Any]) -> None:
    gdf = pd.concat([gpd.read_file(RS / "polygons.shp")[["geometry"]],
                     _odd_parcels(RS / "slope.tif")], ignore_index=True)
    ours = stores["slope"].zonal_stats(
        gdf, stats="count,sum,mean,std,min,max,median,percentile_25,percentile_90",
        weights="coverage")
    theirs = exact_extract(str(RS / "slope.tif"), gdf,
                           ["count", "sum", "mean", "stdev", "min", "max", "median",
                            "quantile(q=0.25)", "quantile(q=0.9)"], output="pandas")
    theirs = theirs.rename(columns={"stdev": "std", "quantile_25": "percentile_25",
                                    "quantile_90": "percentile_90"})
    _compare(ours, theirs, ["count", "sum", "mean", "std", "min", "max"])
    # The weighted quantile is discontinuous where the cumulative coverage meets q exactly,
    # which happens for the parcels drawn along pixel edges: there the last bit of the pixel
    # edges' coordinates picks the side. Everywhere else it is exact.
    for q in ("median", "percentile_25", "percentile_90"):
        np.testing.assert_allclose(ours[q], theirs[q], rtol=1e-4, err_msg=q)


def test_exactextract_published_3x3(tmp_path: Path) -> None:
    src = tmp_path / "grid.tif"
    with rasterio.open(src, "w", driver="GTiff", width=3, height=3, count=1, dtype="float64",
                       crs="EPSG:32616", transform=from_origin(0, 3, 1, 1), nodata=-1) as ds:
        ds.write(np.arange(1, 10, dtype="float64").reshape(3, 3), 1)
    store = _ingest(tmp_path, src, "v", 2)
    square = shapely.box(0.5, 0.5, 2.5, 2.5)
    df = store.zonal_stats(square, crs="EPSG:32616", stats="count,mean,median",
                           weights="coverage")
    assert df["count"][0] == pytest.approx(4)
    assert df["mean"][0] == pytest.approx(5)
    assert df["median"][0] == pytest.approx(5)
    frac = store.zonal_stats(square, crs="EPSG:32616", categorical=True, weights="coverage")
    got = dict(zip(frac["class"], frac["count"], strict=True))
    expected = [0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25]
    assert [got[v] for v in range(1, 10)] == pytest.approx(expected)


def test_categorical_equals_rasterstats(stores: dict[str, Any]) -> None:
    path = RS / "polygons.shp"
    ours = stores["classes"].zonal_stats(str(path), categorical=True)
    theirs = zonal_stats(str(path), str(RS / "slope_classes.tif"), categorical=True)
    for pid, counts in enumerate(theirs):
        rows = ours[ours["parcel_id"] == pid]
        assert dict(zip(rows["class"].astype(int), rows["count"], strict=True)) == {
            int(k): v for k, v in counts.items()}
        assert rows["fraction"].sum() == pytest.approx(1.0)
        with rasterio.open(RS / "slope_classes.tif") as ds:
            cell = abs(ds.res[0] * ds.res[1])
        np.testing.assert_allclose(rows["area_m2"], rows["count"] * cell)


def test_real_sentinel2_multiband_with_holes(tmp_path: Path) -> None:
    src = DATA / "rsgislib-aber" / "sen2_20210527_aber_rebuilt.tif"
    store = _ingest(tmp_path, src, "S2", 64)
    gdf = pd.concat([gpd.read_file(DATA / "rsgislib-aber" / n) for n in (
        "sen2_20210527_aber_polygons.geojson", "aber_osgb_multi_polys.geojson",
        "aber_osgb_single_poly_hole.geojson")], ignore_index=True)[["geometry"]]
    stats = ["count", "mean", "min", "max", "std", "median", "sum"]
    ours = store.zonal_stats(gdf, stats=stats, bands=["S2_3", "S2_8"])
    for i, band in ((3, "S2_3"), (8, "S2_8")):
        theirs = _rs(gdf, src, stats, band=i)
        _compare(ours[ours["band"] == band].reset_index(drop=True), theirs, stats)


def test_wgs84_parcels_over_utm_store(tmp_path: Path) -> None:
    """EPSG:4326 parcels (real land-use register, holes, edge parcels) on a UTM store."""
    src = DATA / "eo-learn-slovenia" / "NDVI_68dates.tif"
    store = _ingest(tmp_path, src, "NDVI", 32)
    gdf = gpd.read_file(DATA / "eo-learn-slovenia" / "LULC.gpkg")[["geometry"]]
    wgs = gdf.to_crs("EPSG:4326")
    band_name = store.bands[10]
    ours = store.zonal_stats(wgs, bands=[band_name], stats=STATS)
    with rasterio.open(src) as ds:
        descriptions = list(ds.descriptions or ())
    # band descriptions that cannot name a layer (these are dates) give NDVI_<band number>
    band_index = (1 + descriptions.index(band_name) if band_name in descriptions
                  else int(band_name.rsplit("_", 1)[1]))
    # the oracle sees the same geometries, reprojected back by pyproj as parcelzarr does
    theirs = _rs(wgs.to_crs(gdf.crs), src, STATS, band=band_index, nodata=np.nan)
    inside = theirs["count"].fillna(0).to_numpy() > 0
    assert inside.sum() > 50
    _compare(ours[inside].reset_index(drop=True), theirs[inside].reset_index(drop=True),
             ["count", "mean", "min", "max", "std", "median"])


def test_band_math_expression_equals_numpy(stores: dict[str, Any]) -> None:
    gdf = gpd.read_file(RS / "polygons.shp")
    ours = stores["slope"].zonal_stats(gdf, indices=["sqrt(slope) * 2 - slope / 10"],
                                       stats="mean,max")
    with rasterio.open(RS / "slope.tif") as ds:
        v = ds.read(1).astype(np.float64)
        from rasterio.features import geometry_mask
        for i, geom in enumerate(gdf.geometry):
            inside = ~geometry_mask([geom], v.shape, ds.transform) & (v != ds.nodata)
            x = np.sqrt(v[inside]) * 2 - v[inside] / 10
            assert ours["mean"][i] == pytest.approx(x.mean())
            assert ours["max"][i] == pytest.approx(x.max())
    assert ours["band"][0] == "sqrt(slope) * 2 - slope / 10"
    with pytest.raises(ValueError, match="not allowed"):
        stores["slope"].zonal_stats(gdf, indices=["__import__('os').system('x')"])


def test_coverage_weighted_multipolygons_equal_exactextract_geographic(tmp_path: Path) -> None:
    """Real multi-island MultiPolygons (São Miguel) on a geographic (EPSG:4326) DEM."""
    src = DATA / "sao-miguel" / "eu_dem_v11.tif"
    store = _ingest(tmp_path, src, "dem", 64)
    gdf = gpd.read_file(DATA / "sao-miguel" / "concelhos.gpkg")[["geometry"]]
    names = ["count", "sum", "mean", "min", "max", "median"]
    ours = store.zonal_stats(gdf, stats=",".join(names), weights="coverage")
    theirs = exact_extract(str(src), gdf, names, output="pandas")
    _compare(ours, theirs, names)
    centre = store.zonal_stats(gdf, stats=STATS)
    _compare(centre, _rs(gdf, src, STATS), [s for s in STATS if s != "nodata"])
