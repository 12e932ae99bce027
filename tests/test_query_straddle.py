"""Dask blocks that never read a chunk twice (issue 13): parcels straddling a block's edge are
reduced by the driver from the prepared pixels of every block they touch.

Oracle: the single-process query on the same store (itself checked against rasterio, numpy,
rasterstats and exactextract elsewhere). Blocks are one chunk each (a tiny
``PARCELZARR_TASK_SECONDS``), so every parcel on more than one chunk straddles; the Dask rows
must be the single run's, bit for bit, and the requests and bytes summed over the tasks the
single run's (each chunk fetched once, by one task).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from parcelzarr.query._blocks import block_parts, block_tasks, chunk_ranges, chunk_reads
from parcelzarr.query._distributed import task_parts
from parcelzarr.query._engine import Prepared
from parcelzarr.query._parcels import load_parcels
from parcelzarr.query._plan import plan_chunks
from parcelzarr.query._request import zonal_request
from parcelzarr.query._stats import exact_stats, weighted_quantiles
from parcelzarr.query._straddle import Packed
from pyproj import CRS

import parcelzarr as pz
from parcelzarr._grid import GridSpec
from parcelzarr.demo import demo_data

from ._rasters import SHARED_DATA, make_parcels, scene_data, write_tif

SLO = SHARED_DATA / "eo-learn-slovenia"
SPEC = GridSpec(crs_wkt=CRS.from_epsg(32616).to_wkt(), x0=300_000.0, y0=4_700_000.0, res_x=10.0,
                res_y=10.0, width=2_560, height=2_560, chunk_x=256, chunk_y=256)


# -- pure parts ---------------------------------------------------------------------------------

def _fields(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = SPEC.x0 + rng.uniform(0, 24_000, n)
    y = SPEC.y0 - rng.uniform(0, 24_000, n)
    w, h = rng.uniform(20, 3_000, n), rng.uniform(20, 3_000, n)
    return shapely.box(x, y - h, x + w, y)


@pytest.mark.parametrize("edge", [1, 2, 4])
def test_block_tasks_read_every_chunk_once(edge: int) -> None:
    geoms = _fields(600, seed=edge)
    ranges = chunk_ranges(shapely.bounds(geoms), SPEC)
    tasks = block_tasks(ranges, SPEC.chunk_counts[1], edge, "g")
    plan = plan_chunks(geoms, SPEC, coverage=True)
    total, distinct = chunk_reads(tasks, ranges, SPEC.chunk_counts[1])
    assert total == distinct == plan.n_chunks
    seen: dict[int, list[int]] = {}
    for t in tasks:
        assert t.window is not None and t.straddle is not None
        cy0, cy1, cx0, cx1 = t.window
        assert cy1 - cy0 == edge and cx1 - cx0 == edge and cy0 % edge == 0 and cx0 % edge == 0
        assert (np.diff(t.parcels) > 0).all()
        r = ranges[t.parcels]
        inside = (r[:, 0] >= cy0) & (r[:, 1] < cy1) & (r[:, 2] >= cx0) & (r[:, 3] < cx1)
        np.testing.assert_array_equal(t.straddle, ~inside)
        for p in t.parcels:
            seen.setdefault(int(p), []).append(cy0 * 1000 + cx0)
    # each parcel goes to every block it touches, and only to those
    for p, blocks in seen.items():
        cy0, cy1, cx0, cx1 = ranges[p] // edge
        assert len(blocks) == len(set(blocks)) == (cy1 - cy0 + 1) * (cx1 - cx0 + 1)
    assert sorted(seen) == sorted(np.flatnonzero(ranges[:, 0] >= 0).tolist())
    if edge == 1:  # a single-chunk block: every parcel on two chunks or more straddles
        many = plan.per_parcel > 1
        assert many.sum() > 100
        assert {p for t in tasks for p in t.parcels[t.straddle]} == set(np.flatnonzero(many))
    # each parcel whole in the block of its first chunk (before): neighbours' chunks read again
    before = block_parts(ranges, SPEC.chunk_counts[1], edge)
    assert chunk_reads(before, ranges, SPEC.chunk_counts[1])[0] > distinct


def test_plan_within_a_window_keeps_the_order_and_counts() -> None:
    geoms = _fields(300, seed=7)
    plan = plan_chunks(geoms, SPEC)
    part = plan.within((2, 5, 3, 7))
    keys = [tuple(c) for c in part.chunks.tolist()]
    want = [tuple(c) for c in plan.chunks.tolist() if 2 <= c[0] < 5 and 3 <= c[1] < 7]
    assert keys == want and len(keys) > 0
    for k, (cy, cx) in enumerate(keys):
        full = next(i for i, c in enumerate(plan.chunks.tolist()) if tuple(c) == (cy, cx))
        np.testing.assert_array_equal(part.parcels_of(k), plan.parcels_of(full))
    counts = np.zeros(len(geoms), dtype=np.int64)
    for k in range(part.n_chunks):
        counts[part.parcels_of(k)] += 1
    np.testing.assert_array_equal(part.per_parcel, counts)


def test_prepared_select_and_renumber_keep_each_parcels_pixel_order() -> None:
    p = Prepared(np.array([0, 0, 1, 2, 2, 2]), np.array([5., 6., 7., 8., 9., 10.]),
                 np.array([.1, .2, .3, .4, .5, .6]), np.array([1, 2]), np.array([.7, .8]),
                 None)
    s = p.select(np.array([True, False, True]))
    assert s.parcels.tolist() == [0, 0, 2, 2, 2] and s.values.tolist() == [5, 6, 8, 9, 10]
    assert s.nodata_parcels.tolist() == [2] and s.nodata_weights is not None
    assert s.nodata_weights.tolist() == [.8]
    r = p.renumber(np.array([9, 3, 4]))  # parcel 0 becomes 9: now last, pixels in order
    assert r.parcels.tolist() == [3, 4, 4, 4, 9, 9]
    assert r.values.tolist() == [7, 8, 9, 10, 5, 6]
    assert r.weights is not None and r.weights.tolist() == [.3, .4, .5, .6, .1, .2]
    assert r.nodata_parcels.tolist() == [3, 4]
    # packed for the trip between processes: parcel indices as runs, the rest as it is
    k = Packed.of(r)
    assert k.ids.tolist() == [3, 4, 9] and k.counts.tolist() == [1, 3, 2]
    u = k.unpack()
    for a, b in zip(dataclasses.astuple(u), dataclasses.astuple(r), strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)
    assert Packed.of(p.select(np.zeros(3, bool))).unpack().parcels.size == 0


def test_weighted_quantiles_do_not_depend_on_the_other_parcels_of_the_batch() -> None:
    """A parcel's coverage-weighted quantiles are the same bits alone or among others (a
    Dask task and the single run reduce it in different batches)."""
    rng = np.random.default_rng(11)
    n, size = 400, 60_000
    parcels = np.sort(rng.integers(0, n, size))
    parcels[-5_000:] = n - 1  # one parcel with many distinct values (the one-by-one path)
    parcels.sort()
    values = rng.normal(0.4, 0.2, size)
    weights = rng.uniform(0.01, 1.0, size)
    qs = [50.0, 10.0, 90.0, 33.3]
    together = weighted_quantiles(parcels, values, weights, n, qs)
    for i in [*range(0, n, 37), n - 1]:
        sel = parcels == i
        alone = weighted_quantiles(np.zeros(sel.sum(), np.int64), values[sel], weights[sel], 1,
                                   qs)
        for k in range(len(qs)):
            assert np.array_equal(together[k][i], alone[k][0], equal_nan=True), (i, qs[k])
    assert np.isfinite(together[0]).sum() > 300
    # and still exactextract's rule: equal weights give numpy's linear quantiles
    eq = exact_stats(parcels, values, n, [90.0], median=True, weights=np.full(size, 0.25))
    v = values[parcels == 3]
    assert eq["median"][3] == pytest.approx(np.median(v), rel=1e-12)
    assert eq["percentile_90"][3] == pytest.approx(np.percentile(v, 90), rel=1e-12)


# -- the Dask path against the single process ----------------------------------------------------

@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture
def one_chunk_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELZARR_TASK_SECONDS", "0.001")


def _compare(store: pz.ParcelStore, parcels: Any, client: Any, *, min_straddlers: int,
             edge: int = 1, straddle: bool = True, refetched: bool = False,
             **kwargs: Any) -> pd.DataFrame:
    """The query on one process and on the cluster: identical rows, and (with ``straddle``)
    the same requests and bytes; the partition has blocks of ``edge`` chunks. ``refetched``:
    a coarser grid's chunks fit no block lattice, so tasks fetch them again (at most the
    2 x 2 a block touches, per task), every band chunk still once."""
    request = zonal_request(store.catalogue, **{k: v for k, v in kwargs.items()
                                                if k not in ("id_column",)})
    pset = load_parcels(parcels, id_column=kwargs.get("id_column"))
    tasks, edges, straddling = task_parts(store.catalogue, pset, request, min_tasks=4)
    assert straddling == straddle and set(edges.values()) == {edge}, edges
    n_straddlers = len({p for t in tasks if t.straddle is not None
                        for p in t.parcels[t.straddle]})
    assert n_straddlers >= min_straddlers, n_straddlers
    single = store.zonal_stats(parcels, **kwargs)
    one = store.last_report
    dist = store.zonal_stats(parcels, scheduler=client, **kwargs)
    many = store.last_report
    assert one is not None and many is not None
    pd.testing.assert_frame_equal(single, dist, check_exact=True)
    if refetched:
        assert many.chunks == one.chunks
        assert one.requests < many.requests <= one.requests + 4 * len(tasks)
    elif straddle:
        assert (many.requests, many.bytes_read, many.chunks) == (
            one.requests, one.bytes_read, one.chunks)
    else:  # whole parcels per task: straddlers read their neighbours' chunks again
        assert many.requests > one.requests
    assert many.rows == one.rows == len(single) > 0
    return single


@pytest.fixture(scope="module")
def slo(tmp_path_factory: pytest.TempPathFactory) -> tuple[pz.ParcelStore, gpd.GeoDataFrame]:
    """The real 68-date Slovenian NDVI stack and its cloud mask, in 16-px chunks (7 x 7 of
    them), with its 88 real land-use parcels (holes, some crossing the edge)."""
    if not SLO.exists():
        pytest.skip("shared real data not available")
    url = str(tmp_path_factory.mktemp("slo") / "slo.zarr")
    times = json.loads((SLO / "timestamps.json").read_text())
    for band in ("NDVI", "CLM"):
        pz.ingest(str(SLO / f"{band}_68dates.tif"), url, band=band, times=times, chunk_size=16,
                  quiet=True)
    return pz.open_store(url), gpd.read_file(SLO / "LULC.gpkg")


STATS = "count,mean,std,min,max,median,percentile_10,percentile_90,majority,variety,nodata"


@pytest.mark.usefixtures("one_chunk_blocks")
@pytest.mark.parametrize("case", ["centre", "coverage", "expression", "composite",
                                  "all_touched", "categorical", "weights_band",
                                  "weighted_frac"])
def test_real_stack_on_one_chunk_blocks_is_the_single_run(
        slo: tuple[pz.ParcelStore, gpd.GeoDataFrame], client: Any, case: str) -> None:
    store, parcels = slo
    kwargs: dict[str, Any] = {"bands": ["NDVI"], "stats": STATS, "time": "2016-03/2016-08",
                              "mask": "CLM", "mask_classes": [1]}
    if case == "coverage":
        kwargs |= {"weights": "coverage",
                   "stats": STATS.replace("count", "count,stdev,quantile_0.25,minority")}
    elif case == "expression":
        kwargs |= {"bands": None, "indices": ["where(NDVI > 0.5, NDVI, 0)", "NDVI * NDVI"]}
    elif case == "composite":
        kwargs |= {"interval": "1MS", "composite": "median", "time": "2016"}
    elif case == "all_touched":
        kwargs |= {"all_touched": True, "mask": None, "mask_classes": None}
    elif case == "categorical":  # class areas and shares of the cloud mask, weighted
        kwargs |= {"bands": ["CLM"], "categorical": True, "weights": "coverage",
                   "stats": "count", "mask": None, "mask_classes": None}
    elif case == "weights_band":  # exactextract's weighted moments, weighted by clear sky
        kwargs |= {"weights": "coverage", "weights_band": "1 - CLM", "mask": None,
                   "mask_classes": None,
                   "stats": "count,mean,weighted_mean,weighted_sum,weighted_stdev,"
                            "weighted_variance"}
    elif case == "weighted_frac":
        # class rows (what stats="frac,weighted_frac" returns) weighted by NDVI
        kwargs |= {"bands": ["CLM"], "categorical": True, "weights": "coverage",
                   "weights_band": "NDVI", "stats": "count", "mask": None,
                   "mask_classes": None, "default_weight": 0.0}
    df = _compare(store, parcels, client, min_straddlers=20, **kwargs)
    if case == "weighted_frac":
        assert df["weighted_frac"].notna().sum() > 100
    else:
        assert df["count"].gt(0).sum() > 100


def test_dask_tasks_never_fetch_a_chunk_twice_without_a_mask(
        slo: tuple[pz.ParcelStore, gpd.GeoDataFrame], client: Any,
        one_chunk_blocks: None) -> None:
    store, parcels = slo
    _compare(store, parcels, client, min_straddlers=20, bands=["NDVI"], stats="mean,median",
             time="2016-06")
    rep = store.last_report
    assert rep is not None and rep.requests == rep.chunks  # one GET per chunk, one task each


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> tuple[pz.ParcelStore, Path]:
    """A demo-like county (the `parcelzarr demo` generator: holes, multipolygons, slivers,
    sub-pixel lots) on a 1,200 px, 4-band scene in 128-px chunks."""
    data = tmp_path_factory.mktemp("county")
    parcels, scene = demo_data(data, size=1200, n_parcels=400, seed=2)
    url = str(data / "county.zarr")
    pz.ingest([str(p) for p in scene], url, quiet=True, chunk_size=128)
    return pz.open_store(url), parcels


@pytest.mark.usefixtures("one_chunk_blocks")
@pytest.mark.parametrize("weights", [None, "coverage"])
def test_demo_county_on_one_chunk_blocks_is_the_single_run(
        county: tuple[pz.ParcelStore, Path], client: Any, weights: str | None) -> None:
    store, parcels = county
    _compare(store, str(parcels), client, min_straddlers=150, id_column="parcel_id",
             bands=["B02", "B03", "B04", "B08"], indices=["ndvi"], weights=weights,
             stats="count,mean,std,median,percentile_90,majority,nodata")


@pytest.mark.usefixtures("one_chunk_blocks")
def test_a_coarser_mask_grid_gets_blocks_on_its_chunks(tmp_path: Path, client: Any) -> None:
    """A 20 m SCL chunk covers 2 x 2 band chunks: blocks of 2 chunks, so no task shares a
    mask chunk either (the requests, SCL GETs included, add up to the single run's)."""
    shape = (256, 320)
    scl = np.random.default_rng(5).choice([4, 5, 8, 9, 3, 10, 4, 4], size=(128, 150))
    src = [write_tif(tmp_path / "T16TCK_20240615T165849_B04_10m.tif", scene_data(shape, 1)),
           write_tif(tmp_path / "T16TCK_20240615T165849_SCL_20m.tif", scl.astype("uint8"),
                     res=20.0, nodata=None)]
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in src], url, quiet=True, chunk_size=32)
    store = pz.open_store(url)
    parcels = make_parcels(shape, n=80)
    _compare(store, parcels, client, min_straddlers=15, edge=2, bands=["B04"],
             stats="count,mean,std,median,majority,nodata", mask=True)
    # a band of the SCL grid beside B04: parcels read from two grids, straddlers go whole
    _compare(store, parcels, client, min_straddlers=0, edge=1, straddle=False,
             bands=["B04", "SCL"], stats="count,mean,median,nodata")


@pytest.mark.usefixtures("one_chunk_blocks")
def test_worker_processes_send_pieces_across(county: tuple[pz.ParcelStore, Path]) -> None:
    """Two worker processes: the straddlers' pieces travel pickled to the driver."""
    from distributed import Client, LocalCluster

    store, parcels = county
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        _compare(store, str(parcels), c, min_straddlers=150, id_column="parcel_id",
                 bands=["B04", "B08"], indices=["ndvi"], weights="coverage",
                 stats="count,mean,median,quantile_0.9,majority")
