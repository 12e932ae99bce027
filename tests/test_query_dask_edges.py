"""The Dask path (blocks of one chunk, straddlers reduced by the driver) on awkward inputs:
geometries beyond repair, parcels outside or partly outside the store, empty, zero-area,
self-intersecting, huge, duplicated and far-flung multipolygons, with masks and weighting
rasters on a coarser grid.

Oracle: the single-process query on the same store (``_compare``: identical rows and dtypes,
and the same requests and bytes, each chunk fetched by one task), and numpy on the source
GeoTIFFs for the weighted means the coarser weights give.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

import parcelzarr as pz

from . import test_query_straddle as straddle
from ._rasters import ORIGIN, make_parcels, make_scene, scene_data, write_tif

_compare = straddle._compare
client = straddle.client  # the fixtures: a LocalCluster of threads, blocks of one chunk
one_chunk_blocks = straddle.one_chunk_blocks

SHAPE = (256, 320)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[pz.ParcelStore, dict[str, Path]]:
    """10 m B04 and B08, on a 20 m grid SCL (no nodata) and a weights band B11 whose 0 is
    nodata, on a 60 m grid weights B09; 32-px chunks, so a 20 m chunk covers 2 x 2 chunks of
    the 10 m grid (a 60 m chunk 6 x 6, on a lattice 30 px off the 10 m grid's)."""
    tmp = tmp_path_factory.mktemp("edges")
    rng = np.random.default_rng(5)
    scl = rng.choice([4, 5, 8, 9, 3, 10, 4, 4], size=(128, 160)).astype("uint8")
    wts = rng.integers(0, 100, size=(128, 160)).astype("uint8")
    name = "T16TCK_20240615T165849_{}.tif"
    src = {"B04": write_tif(tmp / name.format("B04_10m"), scene_data(SHAPE, 1)),
           "B08": write_tif(tmp / name.format("B08_10m"), scene_data(SHAPE, 2)),
           "SCL": write_tif(tmp / name.format("SCL_20m"), scl, res=20.0, nodata=None),
           "B11": write_tif(tmp / name.format("B11_20m"), wts, res=20.0, nodata=0),
           "B09": write_tif(tmp / name.format("B09_60m"), wts[:43, :54], res=60.0, nodata=0)}
    url = str(tmp / "s.zarr")
    pz.ingest([str(p) for p in src.values()], url, quiet=True, chunk_size=32)
    return pz.open_store(url), src


def _awkward() -> gpd.GeoDataFrame:
    """make_parcels' set (holes, multipolygons, sub-pixel, slivers, overlapping, outside,
    empty) and more: a bow-tie, a zero-area triangle, a continent, a multipolygon with
    parts in distant blocks, one geometry three times, one across the scene's corner, one
    with a NaN coordinate (beyond repair)."""
    x0, y0 = ORIGIN
    base = make_parcels(SHAPE, n=80)
    dup = base.geometry.iloc[5]
    extra = [
        shapely.Polygon([(x0 + 100, y0 - 100), (x0 + 900, y0 - 900), (x0 + 900, y0 - 100),
                         (x0 + 100, y0 - 900)]),
        shapely.Polygon([(x0 + 100, y0 - 100), (x0 + 900, y0 - 900), (x0 + 500, y0 - 500)]),
        shapely.box(x0 - 1e6, y0 - 1e6, x0 + 1e6, y0 + 1e6),
        shapely.MultiPolygon([shapely.box(x0 + 50, y0 - 250, x0 + 300, y0 - 50),
                              shapely.box(x0 + 2900, y0 - 2500, x0 + 3100, y0 - 2300)]),
        dup, dup,
        shapely.box(x0 - 500, y0 - 1000, x0 + 700, y0 + 300),
        shapely.Polygon([(x0 + 100, y0 - 100), (np.nan, y0 - 900), (x0 + 900, y0 - 100)]),
    ]
    more = gpd.GeoDataFrame({"field": [f"x{i}" for i in range(len(extra))]}, geometry=extra,
                            crs=base.crs)
    return pd.concat([base, more], ignore_index=True)


def _run(store: pz.ParcelStore, parcels: Any, client: Any, **kwargs: Any) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid parcel geometries", UserWarning)
        return _compare(store, parcels, client, **kwargs)


@pytest.mark.usefixtures("one_chunk_blocks")
def test_a_geometry_beyond_repair_keeps_its_status(
        scene: tuple[pz.ParcelStore, dict[str, Path]], client: Any) -> None:
    """A NaN coordinate reaches the task as the empty polygon that replaced it: the task
    must still say "invalid geometry", not "empty"."""
    store, _ = scene
    df = _run(store, _awkward(), client, min_straddlers=20, bands=["B04"],
              stats="count,mean,median,nodata")
    assert df["status"].iloc[-1] == "invalid geometry"
    assert (df["status"] == "invalid geometry").sum() == 1
    assert {"ok", "empty", "outside"} <= set(df["status"])


@pytest.mark.usefixtures("one_chunk_blocks")
@pytest.mark.parametrize("weights_band", [None, "B11"])
def test_categorical_rows_keep_their_dtypes_beside_tasks_without_rows(
        scene: tuple[pz.ParcelStore, dict[str, Path]], client: Any,
        weights_band: str | None) -> None:
    """Class rows of the parcels that have none (outside, empty: one task) must not turn
    the ids and classes into floats (an id beyond 2**53 would change). SCL and its weights
    share the 20 m grid: blocks of one chunk."""
    store, _ = scene
    kw: dict[str, Any] = {"weights": "coverage", "weights_band": weights_band,
                          "default_weight": 0.0} if weights_band else {}
    df = _run(store, _awkward(), client, min_straddlers=10, bands=["SCL"], categorical=True,
              stats="count", **kw)
    assert df["parcel_id"].dtype == np.int64 and df["class"].dtype == np.int64


@pytest.mark.usefixtures("one_chunk_blocks")
@pytest.mark.parametrize(("band", "default_weight", "mask"), [
    ("B11", None, False), ("B11", 0.0, True), ("B09", 0.0, False), ("B09", None, True)])
def test_weights_on_a_coarser_grid_get_blocks_on_its_chunks(
        scene: tuple[pz.ParcelStore, dict[str, Path]], client: Any, mask: bool, band: str,
        default_weight: float | None) -> None:
    """A 20 m weights chunk covers 2 x 2 band chunks: blocks of 2 chunks (as for a coarser
    mask), so no weights chunk is fetched by two tasks, with or without a mask. A 60 m
    chunk fits no block lattice: the blocks stay (on the mask's chunks if there is one) and
    only 60 m chunks are fetched again, never a band chunk (whole parcels per task, before,
    fetched 3 times the single run's chunks)."""
    store, src = scene
    parcels = _awkward()
    kw: dict[str, Any] = {"bands": ["B04"], "stats": "count,mean,weighted_mean,weighted_sum",
                          "weights_band": band, "default_weight": default_weight,
                          "mask": mask}
    df = _run(store, parcels, client, min_straddlers=15, edge=2 if mask or band == "B11" else 1,
              refetched=band == "B09", **kw)
    # oracle: numpy on the GeoTIFFs, the coarser weights repeated onto the 10 m pixels
    f = 2 if band == "B11" else 6
    with rasterio.open(src["B04"]) as ds:
        v, transform = ds.read(1).astype(float), ds.transform
    with rasterio.open(src[band]) as ds:
        w = np.kron(ds.read(1), np.ones((f, f))).astype(float)[:SHAPE[0], :SHAPE[1]]
    with rasterio.open(src["SCL"]) as ds:
        scl = np.kron(ds.read(1), np.ones((2, 2), dtype="uint8"))[:SHAPE[0], :SHAPE[1]]
    w[w == 0] = np.nan if default_weight is None else default_weight
    ok = v != 0
    if mask:
        ok &= ~np.isin(scl, [0, 1, 3, 8, 9, 10])
    checked = 0
    for i, geom in enumerate(parcels.geometry[:80]):
        inside = rasterize([(geom, 1)], out_shape=SHAPE, transform=transform, fill=0,
                           dtype="uint8").astype(bool) & ok
        if inside.sum() == 0:
            continue
        assert df["count"].iloc[i] == inside.sum()
        expect = np.sum(v[inside] * w[inside]) / np.sum(w[inside])
        assert df["weighted_mean"].iloc[i] == pytest.approx(expect, rel=1e-9, nan_ok=True)
        checked += 1
    assert checked > 40



def test_no_parcels_give_the_single_runs_empty_frame(
        scene: tuple[pz.ParcelStore, dict[str, Path]], client: Any) -> None:
    """No parcel, no task: the empty frame of the single run (pandas had nothing to
    concatenate), as one parcel outside the store gives its one row."""
    store, _ = scene
    parcels = _awkward()
    for some in (parcels.iloc[:0], parcels[parcels["field"] == "f086"]):
        single = store.zonal_stats(some, bands=["B04"], stats="count,mean")
        dist = store.zonal_stats(some, scheduler=client, bands=["B04"], stats="count,mean")
        pd.testing.assert_frame_equal(single, dist, check_exact=True)
        assert len(dist) == len(some)
        rep = store.last_report
        assert rep is not None and rep.requests == 0


@pytest.fixture(scope="module")
def two_zones(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    """B04 and B08 of a UTM 16 tile and a UTM 17 tile (two grids), in 16-px chunks."""
    tmp = tmp_path_factory.mktemp("zones")
    east = make_scene(tmp / "z16", bands=["B04", "B08"], shape=(120, 150),
                      origin=(799_000.0, 4_500_000.0))
    west = [write_tif(tmp / f"T17TKE_20240615T165849_{b}_10m.tif",
                      scene_data((120, 150), 9 + i), origin=(201_000.0, 4_500_000.0),
                      crs="EPSG:32617") for i, b in enumerate(["B04", "B08"])]
    url = str(tmp / "z.zarr")
    pz.ingest([str(p) for p in [*east, *west]], url, quiet=True, chunk_size=16)
    return pz.open_store(url)


@pytest.mark.usefixtures("one_chunk_blocks")
def test_parcels_in_two_utm_zones(two_zones: pz.ParcelStore, client: Any) -> None:
    """Parcels in WGS 84 on both zones' grids, one crossing the gap between the tiles and a
    multipolygon with a part in each zone: each grid gets its own blocks."""
    rng = np.random.default_rng(1)

    def boxes(x0: float, y0: float, crs: str, n: int) -> gpd.GeoSeries:
        x, y = x0 + rng.uniform(0, 1500, n), y0 - rng.uniform(0, 1200, n)
        w, h = rng.uniform(20, 600, n), rng.uniform(20, 600, n)
        return gpd.GeoSeries(shapely.box(x, y - h, x + w, y), crs=crs).to_crs(4326)

    east = boxes(799_000, 4_500_000, "EPSG:32616", 40)
    west = boxes(201_000, 4_500_000, "EPSG:32617", 40)
    gap = gpd.GeoSeries([shapely.box(800_200, 4_499_200, 800_900, 4_499_600)],
                        crs="EPSG:32616").to_crs(4326)
    both = gpd.GeoSeries([shapely.MultiPolygon([gap.iloc[0], west.iloc[10]])], crs=4326)
    geoms = pd.concat([east, west, gap, both], ignore_index=True)
    parcels = gpd.GeoDataFrame({"pid": [f"p{i}" for i in range(len(geoms))]}, geometry=geoms,
                               crs=4326)
    df = _run(two_zones, parcels, client, min_straddlers=30, id_column="pid", bands=["B04"],
              weights="coverage", weights_band="B08",
              stats="count,mean,median,nodata,weighted_mean")
    assert df["pid"].nunique() >= 80

