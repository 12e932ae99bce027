"""One bad parcel never fails the batch (issue 9, item 7): unusable parcels get count 0 and a
status; parcels reaching far beyond the grid are exact and cost bounded memory.

Oracles: rasterstats on its own slope.tif (which declares nodata, so it counts cells beyond
the raster as nodata, as parcelzarr does), and pixel-centre arithmetic for axis-aligned boxes.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterstats import zonal_stats

import parcelzarr as pz

from ._rasters import SHARED_DATA

RS = SHARED_DATA / "rasterstats"
pytestmark = pytest.mark.skipif(not RS.exists(), reason="shared real data not available")


@pytest.fixture(scope="module")
def slope(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    url = str(tmp_path_factory.mktemp("slope") / "slope.zarr")
    pz.ingest(str(RS / "slope.tif"), url, band="slope", time="2020-01-01", quiet=True,
              chunk_size=32)
    return pz.open_store(url)


@pytest.fixture(scope="module")
def raster() -> dict:
    with rasterio.open(RS / "slope.tif") as ds:
        return {"crs": ds.crs, "transform": ds.transform, "bounds": ds.bounds,
                "shape": ds.shape, "data": ds.read(1), "nodata": ds.nodata}


def _real(raster: dict) -> list[shapely.Geometry]:
    return list(gpd.read_file(RS / "polygons.shp").geometry)


def _rasterstats(geoms: list[shapely.Geometry], **kw: object) -> pd.DataFrame:
    return pd.DataFrame(zonal_stats(geoms, str(RS / "slope.tif"),
                                    stats=["count", "mean", "nodata"], **kw))


def test_unusable_parcels_get_a_status_and_the_batch_goes_on(slope: pz.ParcelStore,
                                                              raster: dict) -> None:
    real = _real(raster)
    x, y = real[0].centroid.x, real[0].centroid.y
    nan = shapely.from_wkt(f"POLYGON(({x} {y}, nan {y + 50}, {x + 50} {y + 50}, {x} {y}))")
    inf = shapely.from_wkt(f"POLYGON(({x} {y}, inf {y + 50}, {x + 50} {y + 50}, {x} {y}))")
    left = raster["bounds"].left
    outside = shapely.box(left - 5000, y - 100, left - 4000, y + 100)
    geoms = [real[0], nan, None, shapely.Polygon(), inf, outside, real[1]]
    gdf = gpd.GeoDataFrame({"fid": list("abcdefg")}, geometry=geoms, crs=raster["crs"])
    df = slope.zonal_stats(gdf, stats="count,mean,nodata", id_column="fid")
    assert df["fid"].tolist() == list("abcdefg")
    assert df["status"].tolist() == ["ok", "invalid geometry", "empty", "empty",
                                     "invalid geometry", "outside", "ok"]
    theirs = _rasterstats(real)
    ok = df[df["status"] == "ok"].reset_index(drop=True)
    assert ok["count"].tolist() == theirs["count"].tolist() == [75, 50]
    np.testing.assert_allclose(ok["mean"], theirs["mean"], rtol=1e-6)  # rasterstats sums float32
    bad = df[df["status"] != "ok"]
    assert (bad["count"] == 0).all() and bad["mean"].isna().all()
    # the outside parcel's pixels are nodata, as rasterstats counts them
    assert df["nodata"][5] == _rasterstats([outside])["nodata"][0] > 0


def test_parcels_given_in_the_wrong_crs_do_not_crash(slope: pz.ParcelStore,
                                                     raster: dict) -> None:
    """Coordinates that project to infinity (lat beyond 90) are 'outside', not an
    OverflowError for the batch."""
    real = gpd.GeoSeries(_real(raster), crs=raster["crs"]).to_crs("EPSG:4326")
    wrong = shapely.box(10.0, 91.0, 10.5, 95.0)
    gdf = gpd.GeoDataFrame(geometry=[real[0], wrong, real[1]], crs="EPSG:4326")
    df = slope.zonal_stats(gdf, stats="count")
    assert df["status"].tolist() == ["ok", "outside", "ok"]
    assert df["count"].tolist()[1] == 0
    assert df["count"].tolist()[0] > 0


@pytest.mark.parametrize("all_touched", [False, True])
def test_parcels_crossing_the_grid_edge_equal_rasterstats(slope: pz.ParcelStore, raster: dict,
                                                          all_touched: bool) -> None:
    b = raster["bounds"]
    geoms = list(gpd.read_file(RS / "polygons_partial_overlap.shp").geometry)
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    rng = np.random.default_rng(7)
    for _ in range(6):  # rotated, irregular parcels reaching 1-4 km beyond an edge
        w, h = rng.uniform(300, 4000, 2)
        poly = shapely.affinity.rotate(shapely.box(-w, -h / 3, w, h), rng.uniform(0, 90))
        ang = rng.uniform(0, 2 * np.pi)
        geoms.append(shapely.affinity.translate(poly, cx + 1300 * np.cos(ang),
                                                cy + 1100 * np.sin(ang)))
    geoms.append(shapely.box(b.left - 3003, b.bottom - 2997, b.right + 2011, b.top + 1993))
    gdf = gpd.GeoDataFrame(geometry=geoms, crs=raster["crs"])
    ours = slope.zonal_stats(gdf, stats="count,mean,nodata", all_touched=all_touched)
    theirs = _rasterstats(geoms, all_touched=all_touched)
    assert (ours["status"] == "ok").all()
    assert ours["count"].tolist() == theirs["count"].tolist()
    assert ours["nodata"].tolist() == theirs["nodata"].astype(int).tolist()
    np.testing.assert_allclose(ours["mean"], theirs["mean"], rtol=1e-6)  # rasterstats sums float32
    assert (ours["nodata"] > 1000).sum() >= 3


def _centres(lo: float, hi: float, origin: float, res: float) -> int:
    """Pixel centres origin + (k + 0.5) res strictly inside (lo, hi)."""
    k0 = math.floor((lo - origin) / res - 0.5) + 1
    k1 = math.ceil((hi - origin) / res - 0.5) - 1
    return max(0, k1 - k0 + 1)


@pytest.mark.parametrize("km", [150, 2000])
def test_parcel_far_past_the_grid_is_exact_in_bounded_memory(slope: pz.ParcelStore,
                                                             raster: dict, km: int) -> None:
    """150 km once allocated 827 MB (at 10 m) and 2,000 km raised MemoryError: memory is now
    independent of the parcel's extent, and its pixels beyond the grid are still nodata."""
    b, t = raster["bounds"], raster["transform"]
    res = t.a
    # edges off every pixel centre: an exact count of centres by arithmetic
    box = shapely.box(b.left + 101.3, b.top - km * 1000 + 0.7, b.left + km * 1000 + 0.9,
                      b.top - 301.1)
    total = (_centres(box.bounds[0], box.bounds[2], t.c, res)
             * _centres(box.bounds[1], box.bounds[3], t.f, res))
    inside = _rasterstats([box.intersection(shapely.box(*b))])
    gdf = gpd.GeoDataFrame(geometry=[_real(raster)[0], box], crs=raster["crs"])
    tracemalloc.start()
    try:
        df = slope.zonal_stats(gdf, stats="count,nodata")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak traced memory {peak / 1e6:.0f} MB"
    assert df["count"].tolist() == [75, inside["count"][0]]
    assert df["nodata"][1] == total - inside["count"][0]
    assert df["status"].tolist() == ["ok", "ok"]


def test_absurdly_large_parcel_is_refused_per_parcel(slope: pz.ParcelStore,
                                                     raster: dict) -> None:
    b = raster["bounds"]
    huge = shapely.box(b.left + 100, b.bottom - 1e12, b.right + 1e12, b.top - 100)
    gdf = gpd.GeoDataFrame(geometry=[_real(raster)[0], huge], crs=raster["crs"])
    df = slope.zonal_stats(gdf, stats="count,nodata")
    assert df["status"].tolist() == ["ok", "too large"]
    assert df["count"].tolist() == [75, 0]


def test_status_column_in_the_cli_output(slope: pz.ParcelStore, raster: dict,
                                         tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parcelzarr.cli import main

    real = _real(raster)
    x, y = real[0].centroid.x, real[0].centroid.y
    nan = shapely.from_wkt(f"POLYGON(({x} {y}, nan {y + 50}, {x + 50} {y + 50}, {x} {y}))")
    path = tmp_path / "parcels.gpkg"
    gpd.GeoDataFrame(geometry=[real[0], nan, real[1]], crs=raster["crs"]).to_file(path)
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(main, ["stats", slope.url, str(path), "--out", str(out),
                                    "--stats", "count", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert df["status"].tolist() == ["ok", "invalid geometry", "ok"]
    assert df["count"].tolist() == [75, 0, 50]
