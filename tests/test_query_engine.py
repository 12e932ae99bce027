"""Engine features: time-compacted chunks, SCL masking across resolutions, two UTM zones,
transient faults on Azurite (both transports), Dask distributed, property tests.

Oracles: numpy on the source arrays with rasterio's ``geometry_mask``; never parcelzarr.
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
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parcelzarr.query._engine import GridJob, Layer, run_grid
from parcelzarr.query._plan import plan_chunks
from parcelzarr.query._stats import parse_stats
from parcelzarr.stores import ResilientStore
from rasterio.features import geometry_mask
from zarr.core.sync import sync

import parcelzarr as pz
from parcelzarr._grid import GridSpec

from ._rasters import CRS, make_scene, scene_data, write_tif
from ._rasters import make_parcels as make_parcels

STATS = ["count", "sum", "mean", "min", "max", "std", "median", "percentile_25", "nodata"]


def _oracle(data: np.ndarray, transform: Any, geom: Any, nodata: float | None,
            bad: np.ndarray | None = None) -> dict[str, float]:
    inside = ~geometry_mask([geom], data.shape, transform) if not geom.is_empty else \
        np.zeros(data.shape, bool)
    ok = inside & (data != nodata) if nodata is not None else inside
    if bad is not None:
        ok &= ~bad
    v = data[ok].astype(np.float64)
    out = {"count": v.size, "nodata": int(inside.sum() - ok.sum())}
    if v.size:
        out |= {"sum": v.sum(), "mean": v.mean(), "min": v.min(), "max": v.max(),
                "std": v.std(), "median": np.median(v), "percentile_25": np.percentile(v, 25)}
    else:
        out |= dict.fromkeys(("sum", "mean", "min", "max", "std", "median", "percentile_25"),
                             np.nan)
    return out


def _check(df: pd.DataFrame, expected: list[dict[str, float]], stats: list[str]) -> None:
    assert len(df) == len(expected)
    for s in stats:
        np.testing.assert_allclose(df[s].to_numpy(float), [e[s] for e in expected],
                                   rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=s)


def test_time_compacted_chunks_read_once_per_spatial_chunk() -> None:
    """Chunks (T, cy, cx): a season costs one request per spatial chunk, whatever T."""
    rng = np.random.default_rng(0)
    spec = GridSpec(crs_wkt=rasterio.crs.CRS.from_string(CRS).to_wkt(), res_x=10.0,
                    res_y=10.0, x0=300_000.0, y0=4_500_000.0, width=96, height=80,
                    chunk_y=32, chunk_x=32)
    t = 6
    data = rng.integers(1, 5000, size=(t, 80, 96)).astype("uint16")
    data[:, :5, :] = 0
    geoms = np.array([shapely.box(300_015, 4_499_250, 300_700, 4_499_900),
                      shapely.Point(300_500, 4_499_500).buffer(160)], dtype=object)
    results = {}
    for tchunk in (1, 3, 6):
        store = ResilientStore(zarr.storage.MemoryStore())
        arr = zarr.create_array(store, name="B04", shape=data.shape, dtype="uint16",
                                chunks=(tchunk, 32, 32), fill_value=0)
        arr[:] = data
        store.counters.reset()
        plan = plan_chunks(geoms, spec)
        layers = [Layer("B04", i, ("B04",)) for i in range(t)]
        job = GridJob(plan=plan, geoms=geoms, arrays={"B04": arr._async_array},
                      nodata={"B04": 0}, layers=layers, stats=parse_stats(STATS),
                      all_touched=False, concurrency=8)
        results[tchunk] = sync(run_grid(job))
        assert store.counters.get_requests == plan.n_chunks * -(-t // tchunk)
    for i in range(t):
        expected = [_oracle(data[i], spec.transform, g, 0) for g in geoms]
        for tchunk, res in results.items():
            got = pd.DataFrame({s: res[i][s] for s in STATS})
            _check(got, expected, STATS)
            del tchunk


def test_scl_mask_across_resolutions(tmp_path: Path) -> None:
    shape = (200, 240)
    b04 = scene_data(shape, 1)
    # the SCL scene stops 20 columns short of the band's: those pixels have no mask
    scl = np.random.default_rng(5).choice([4, 5, 8, 9, 3, 10, 4, 4], size=(100, 110))
    scl = scl.astype("uint8")
    src = [write_tif(tmp_path / "T16TCK_20240615T165849_B04_10m.tif", b04),
           write_tif(tmp_path / "T16TCK_20240615T165849_SCL_20m.tif", scl, res=20.0,
                     nodata=None)]
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in src], url, quiet=True, chunk_size=64)
    store = pz.open_store(url)
    gdf = make_parcels(shape, n=25)
    df = store.zonal_stats(gdf, bands=["B04"], stats=STATS, mask="scl")
    up = np.full(shape, 4, dtype="uint8")
    up[:, :220] = np.repeat(np.repeat(scl, 2, 0), 2, 1)
    with rasterio.open(src[0]) as ds:
        transform = ds.transform
    for classes in (None, [8, 9]):
        bad = np.isin(up, [0, 1, 3, 8, 9, 10] if classes is None else classes)
        df = store.zonal_stats(gdf, bands=["B04"], stats=STATS, mask=True, mask_classes=classes)
        expected = []
        for g in gdf.geometry:
            e = _oracle(b04, transform, g, 0, bad)
            # parcels beyond the scene edge: their outside pixels are nodata too
            expected.append(e)
        inside = [shapely.box(*rasterio.transform.array_bounds(*shape, transform)).contains(g)
                  or g.is_empty for g in gdf.geometry]
        _check(df[inside].reset_index(drop=True),
               [e for e, i in zip(expected, inside, strict=True) if i], STATS)
        rep = store.last_report
        assert rep is not None
        scl_grid = next(g for g in store.grids.values() if "SCL" in g.bands)
        n_scl = scl_grid.spec.chunk_counts[0] * scl_grid.spec.chunk_counts[1]
        assert rep.requests - rep.chunks <= n_scl  # each of the SCL grid's chunks at most once
    with pytest.raises(ValueError, match="mask="):
        store.zonal_stats(gdf, bands=["B04"], mask="cloud")


def test_two_zone_grids_each_parcel_read_from_its_grid(tmp_path: Path) -> None:
    """Parcels near a zone boundary are read from the zone grid that covers them."""
    east = make_scene(tmp_path / "z16", bands=["B04"], shape=(120, 150),
                      origin=(799_000.0, 4_500_000.0))
    a = scene_data((120, 150), 9)
    west_path = write_tif(tmp_path / "T17TKE_20240615T165849_B04_10m.tif", a,
                          origin=(201_000.0, 4_500_000.0), crs="EPSG:32617")
    url = str(tmp_path / "z.zarr")
    pz.ingest([str(p) for p in [*east, west_path]], url, quiet=True, chunk_size=64)
    store = pz.open_store(url)
    assert len(store.grids) == 2
    g16 = gpd.GeoSeries([shapely.box(799_300, 4_499_100, 800_100, 4_499_700)], crs="EPSG:32616")
    g17 = gpd.GeoSeries([shapely.box(201_200, 4_499_200, 202_000, 4_499_600)], crs="EPSG:32617")
    parcels = pd.concat([g16.to_crs(4326), g17.to_crs(4326)], ignore_index=True)
    df = store.zonal_stats(gpd.GeoDataFrame(geometry=parcels, crs=4326), stats=STATS)
    expected = []
    for path, g in ((east[0], g16), (west_path, g17)):
        with rasterio.open(path) as ds:
            geom = gpd.GeoSeries(parcels, crs=4326).to_crs(ds.crs)[len(expected)]
            expected.append(_oracle(ds.read(1), ds.transform, geom, 0))
        del g
    _check(df, expected, STATS)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_scene(tmp_path_factory.mktemp("faults"), shape=(300, 320), bands=["B04", "B08"])


@pytest.mark.azure
@pytest.mark.parametrize("transport", ["adlfs", "obstore"])
@pytest.mark.parametrize("kind", ["503", "500", "reset"])
def test_transient_faults_are_retried_and_results_stay_exact(
        small_scene: list[Path], azurite: Any, az_container: str, proxy: Any, transport: str,
        kind: str) -> None:
    url = f"az://{az_container}/f.zarr"
    pz.ingest([str(p) for p in small_scene], url, storage_options=azurite.storage_options(),
              quiet=True, chunk_size=64)
    gdf = make_parcels((300, 320), n=20)
    opts = azurite.storage_options(proxy.endpoint) | {"transport": transport}
    clean = pz.open_store(url, storage_options=opts).zonal_stats(gdf, stats=STATS)
    store = pz.open_store(url, storage_options=opts)
    before = proxy.snapshot()
    proxy.inject_faults(4, kind=kind)
    faulty = store.zonal_stats(gdf, stats=STATS)
    seen = proxy.snapshot().requests - before.requests
    assert store.last_report is not None
    # the report counts the requests that succeeded; the proxy also saw the failed attempts
    assert store.last_report.requests + store.last_report.retries <= seen
    pd.testing.assert_frame_equal(clean, faulty, check_like=False)
    assert store.last_report is not None
    if kind != "reset":  # aiohttp may itself retry a request on a reset pooled connection
        assert store.last_report.retries >= 1
    assert proxy.snapshot().faults_injected == 4


@pytest.mark.azure
def test_obstore_and_adlfs_give_identical_results_and_costs(
        small_scene: list[Path], azurite: Any, az_container: str) -> None:
    url = f"az://{az_container}/t.zarr"
    pz.ingest([str(p) for p in small_scene], url, storage_options=azurite.storage_options(),
              quiet=True, chunk_size=64)
    gdf = make_parcels((300, 320), n=20)
    out = {}
    for transport in ("adlfs", "obstore"):
        s = pz.open_store(url, storage_options=azurite.storage_options() | {
            "transport": transport})
        out[transport] = (s.zonal_stats(gdf, stats=STATS, indices=["ndvi"]), s.last_report)
    pd.testing.assert_frame_equal(out["adlfs"][0], out["obstore"][0])
    a, b = out["adlfs"][1], out["obstore"][1]
    assert (a.requests, a.bytes_read) == (b.requests, b.bytes_read)
    assert a.requests == a.chunks  # every chunk once, nothing else during the query
    with pytest.raises(ValueError, match="transport"):
        pz.open_store(url, storage_options=azurite.storage_options() | {"transport": "gdal"})


def test_dask_distributed_identical(small_scene: list[Path], tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    url = str(tmp_path / "d.zarr")
    pz.ingest([str(p) for p in small_scene], url, quiet=True, chunk_size=64)
    store = pz.open_store(url)
    gdf = make_parcels((300, 320), n=40)
    single = store.zonal_stats(gdf, stats=STATS, indices=["ndvi"], id_column="field")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dist = store.zonal_stats(gdf, stats=STATS, indices=["ndvi"], id_column="field",
                                 scheduler=client)
    pd.testing.assert_frame_equal(single, dist)
    assert store.last_report is not None
    assert store.last_report.parcels == len(gdf)


@pytest.fixture(scope="module")
def prop_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Any]:
    folder = tmp_path_factory.mktemp("prop")
    data = scene_data((90, 110), 11)
    path = write_tif(folder / "T16TCK_20240615T165849_B04_10m.tif", data)
    with rasterio.open(path) as ds:
        return path, data, ds.transform


_STORES: dict[int, pz.ParcelStore] = {}


def _store_for(chunk: int, path: Path) -> pz.ParcelStore:
    if chunk not in _STORES:
        url = str(path.parent / f"c{chunk}.zarr")
        pz.ingest(str(path), url, quiet=True, chunk_size=chunk)
        _STORES[chunk] = pz.open_store(url)
    return _STORES[chunk]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(
    chunk=st.sampled_from([16, 24, 40, 64, 128]),
    pts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=9),
    scale=st.floats(0.01, 0.9),
    all_touched=st.booleans(),
)
def test_property_random_polygons_and_chunks(prop_source: tuple[Path, np.ndarray, Any],
                                             chunk: int, pts: list[tuple[float, float]],
                                             scale: float, all_touched: bool) -> None:
    path, data, transform = prop_source
    left, top = transform.c, transform.f
    w, h = data.shape[1] * 10.0, data.shape[0] * 10.0
    cx, cy = left + w * pts[0][0], top - h * pts[0][1]
    ring = [(cx + (x - 0.5) * w * scale, cy + (y - 0.5) * h * scale) for x, y in pts]
    geom = shapely.make_valid(shapely.convex_hull(shapely.MultiPoint(ring)).buffer(0))
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        geom = shapely.box(cx, cy - 15, cx + 15, cy)
    geom = geom.intersection(shapely.box(left, top - h, left + w, top))
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        return
    store = _store_for(chunk, path)
    df = store.zonal_stats(geom, crs=CRS, stats=STATS, all_touched=all_touched)
    inside = ~geometry_mask([geom], data.shape, transform, all_touched=all_touched)
    ok = inside & (data != 0)
    v = data[ok].astype(np.float64)
    assert df["count"][0] == v.size
    assert df["nodata"][0] == inside.sum() - ok.sum()
    if v.size:
        np.testing.assert_allclose(
            df.loc[0, ["sum", "mean", "min", "max", "std", "median", "percentile_25"]].to_numpy(
                float),
            [v.sum(), v.mean(), v.min(), v.max(), v.std(), np.median(v), np.percentile(v, 25)],
            rtol=1e-9)


def test_overlapping_parcels_keep_all_their_pixels(prop_source: tuple[Path, np.ndarray, Any]
                                                   ) -> None:
    """Parcels overlapping on pixel centres are burned in separate passes; a sliver overlap
    between neighbours (no centre inside) does not need one."""
    path, data, transform = prop_source
    x0, y0 = transform.c, transform.f
    a = shapely.box(x0 + 100, y0 - 400, x0 + 400, y0 - 100)
    b = shapely.box(x0 + 300, y0 - 500, x0 + 600, y0 - 200)          # shares 10x20 centres
    c = shapely.box(x0 + 398, y0 - 400, x0 + 700, y0 - 300)          # 2 m sliver over a
    geoms = np.array([a, b, c], dtype=object)
    spec = _store_for(40, path).grids[next(iter(_store_for(40, path).grids))].spec
    plan = plan_chunks(geoms, spec)
    assert plan.passes[0] != plan.passes[1]
    assert plan.passes[2] == plan.passes[0] or plan.passes[2] != plan.passes[1]
    df = _store_for(40, path).zonal_stats(gpd.GeoSeries(geoms, crs=CRS), stats=STATS)
    _check(df, [_oracle(data, transform, g, 0) for g in geoms], STATS)


def test_transport_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from parcelzarr.stores import choose_transport

    monkeypatch.delenv("PARCELZARR_TRANSPORT", raising=False)
    assert choose_transport(None, read_only=True) == "obstore"
    assert choose_transport(None, read_only=False) == "adlfs"
    assert choose_transport("adlfs", read_only=True) == "adlfs"
    monkeypatch.setenv("PARCELZARR_TRANSPORT", "adlfs")
    assert choose_transport(None, read_only=True) == "adlfs"
    assert choose_transport("obstore", read_only=True) == "obstore"
    monkeypatch.setenv("PARCELZARR_TRANSPORT", "gdal")
    with pytest.raises(ValueError, match="PARCELZARR_TRANSPORT"):
        choose_transport(None, read_only=True)
