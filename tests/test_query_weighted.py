"""exactextract's weighted operations with a weighting raster (``weights_band=``), checked
against exactextract itself (``exact_extract(..., weights=...)``) on the real rasters of
../shared/data, and against numpy for the pixel-centre rule.

* São Miguel (exactextractr's own example): CORINE land cover weighted by the GPW population
  count, 40 times coarser and nodata over the sea; the EU-DEM weighted by population (4 times
  coarser), values and weights both with nodata.
* Slovenia: the 68-date NDVI stack weighted by a static layer (the DEM, some pixels made
  nodata), by a per-date expression (``1 - CLM``: clear-sky pixels), and monthly composites.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from exactextract import exact_extract
from exactextract.raster import RasterioRasterSource
from parcelzarr.query import stream_zonal_stats
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import BandNotFoundError

from ._rasters import SHARED_DATA

SM = SHARED_DATA / "sao-miguel"
SLO = SHARED_DATA / "eo-learn-slovenia"
pytestmark = pytest.mark.skipif(not (SM.exists() and SLO.exists()),
                                reason="shared data not available")
CLC = SM / "clc2018_v2020_20u1.tif"
POP = SM / "gpw_v411_2020_count_2020.tif"
DEM = SM / "eu_dem_v11.tif"
WEIGHTED = ["weighted_mean", "weighted_sum", "weighted_stdev", "weighted_variance"]


def _ee(values: Path, band: int, weights: Path, wband: int, geoms: gpd.GeoSeries,
        ops: list[str]) -> pd.DataFrame:
    """exactextract as users call it: a value raster, a weighting raster, the ops."""
    gdf = gpd.GeoDataFrame(geometry=geoms.reset_index(drop=True))
    with rasterio.open(values) as ds, rasterio.open(weights) as ws:
        return exact_extract(RasterioRasterSource(ds, band_idx=band), gdf, ops,
                             weights=RasterioRasterSource(ws, band_idx=wband),
                             output="pandas")


def _ee_weighted(values: Path, band: int, weights: Path, wband: int, geoms: gpd.GeoSeries,
                 default: float | None = None) -> pd.DataFrame:
    """exactextract's weighted moments (``default_weight`` if given); its weighted_sum over
    no valid cell is 0, ours NaN as every statistic of such a parcel: compared as NaN."""
    suffix = "" if default is None else f"(default_weight={default:g})"
    df = _ee(values, band, weights, wband, geoms, [f"{op}{suffix}" for op in WEIGHTED]
             + ["count"])
    df.loc[df["count"] == 0, "weighted_sum"] = np.nan
    return df


def _close(ours: pd.Series | np.ndarray, theirs: pd.Series | np.ndarray, what: str) -> None:
    np.testing.assert_allclose(np.asarray(ours, float), np.asarray(theirs, float), rtol=2e-5,
                               atol=1e-6, equal_nan=True, err_msg=what)


# -- São Miguel: land cover and elevation weighted by population ---------------------------
#: Municipalities given a population cell of nodata (``gaps``).
GAPPED = (0, 2, 4)


@pytest.fixture(scope="module")
def concelhos() -> gpd.GeoDataFrame:
    with rasterio.open(CLC) as ds:
        crs = ds.crs
    return gpd.read_file(SM / "concelhos.gpkg").to_crs(crs)


@pytest.fixture(scope="module")
def gaps(tmp_path_factory: pytest.TempPathFactory, concelhos: gpd.GeoDataFrame) -> Path:
    """The population raster with the cell under a point inside municipalities
    :data:`GAPPED` set to its nodata value (GPW itself has a count wherever there is land)."""
    path = tmp_path_factory.mktemp("weighted") / "pop_gaps.tif"
    with rasterio.open(POP) as ds:
        pop, profile = ds.read(1), ds.profile
        for i in GAPPED:
            point = concelhos.geometry.iloc[i].representative_point()
            row, col = ds.index(point.x, point.y)
            pop[row, col] = ds.nodata
    with rasterio.open(path, "w", **profile) as out:
        out.write(pop, 1)
    return path


@pytest.fixture(scope="module")
def sm_store(tmp_path_factory: pytest.TempPathFactory, gaps: Path) -> pz.ParcelStore:
    """Land cover, elevation and population in one store: three grids of EPSG:4326 on one
    lattice (population 40x and 4x coarser), population dated 2020, the others 2018."""
    url = str(tmp_path_factory.mktemp("weighted") / "sm.zarr")
    pz.ingest(str(CLC), url, band="clc", time="2018-01-01", quiet=True, chunk_size=64)
    pz.ingest(str(DEM), url, band="dem", time="2018-01-01", quiet=True, chunk_size=32)
    pz.ingest(str(POP), url, band="pop", time="2020-01-01", quiet=True, chunk_size=16)
    pz.ingest(str(gaps), url, band="gaps", time="2020-01-01", quiet=True, chunk_size=16)
    return pz.open_store(url)


def _shares(row: pd.Series, name: str) -> pd.Series:
    return pd.Series(np.asarray(row[name], float), index=np.asarray(row["unique"], int))


@pytest.mark.parametrize("default", [None, 0.0])
def test_weighted_frac_equals_exactextract_on_land_cover_by_population(
        sm_store: pz.ParcelStore, concelhos: gpd.GeoDataFrame, gaps: Path,
        default: float | None) -> None:
    ours = sm_store.zonal_stats(concelhos, bands=["clc"], stats=["frac", "weighted_frac"],
                                weights="coverage", weights_band="gaps",
                                default_weight=default)
    suffix = "" if default is None else f"(default_weight={default:g})"
    theirs = _ee(CLC, 1, gaps, 1, concelhos.geometry,
                 ["unique", "frac", f"weighted_frac{suffix}"])
    assert {"frac", "weighted_frac", "count", "class"} <= set(ours.columns)
    spoilt = set()
    for i, row in theirs.iterrows():
        mine = ours[ours["parcel_id"] == i].set_index("class")
        frac, wfrac = _shares(row, "frac"), _shares(row, "weighted_frac")
        assert sorted(mine.index) == sorted(frac.index), i
        _close(mine.loc[frac.index, "frac"], frac, f"frac {i}")
        _close(mine.loc[wfrac.index, "weighted_frac"], wfrac, f"weighted_frac {i}")
        if np.isnan(wfrac).all():
            spoilt.add(i)
    if default is None:  # a pixel without population makes its parcel's shares NaN
        assert set(GAPPED) <= spoilt < set(theirs.index)
    else:
        assert not spoilt
        shares = ours.groupby("parcel_id")["weighted_frac"].sum()
        np.testing.assert_allclose(shares, 1.0, rtol=1e-9)


def test_weighted_frac_alone_keeps_class_rows(sm_store: pz.ParcelStore,
                                              concelhos: gpd.GeoDataFrame) -> None:
    alone = sm_store.zonal_stats(concelhos.iloc[:2], bands=["clc"], stats="weighted_frac",
                                 weights_band="pop", default_weight=0)
    assert "weighted_frac" in alone.columns and "frac" not in alone.columns
    both = sm_store.zonal_stats(concelhos.iloc[:2], bands=["clc"], categorical=True,
                                weights_band="pop", default_weight=0)
    np.testing.assert_array_equal(alone["weighted_frac"], both["weighted_frac"])
    with pytest.raises(ValueError, match="one row per class"):
        sm_store.zonal_stats(concelhos.iloc[:2], bands=["clc"], stats="weighted_frac",
                             weights_band="pop", output="wide")


@pytest.mark.parametrize("default", [None, 0.0, 1.0])
def test_weighted_moments_of_elevation_by_population_equal_exactextract(
        sm_store: pz.ParcelStore, concelhos: gpd.GeoDataFrame, gaps: Path,
        default: float | None) -> None:
    ours = sm_store.zonal_stats(concelhos, bands=["dem"], stats=[*WEIGHTED, "mean", "count"],
                                weights="coverage", weights_band="gaps",
                                default_weight=default)
    theirs = _ee_weighted(DEM, 1, gaps, 1, concelhos.geometry, default)
    theirs["mean"] = _ee(DEM, 1, gaps, 1, concelhos.geometry, ["mean"])["mean"]
    for name in [*WEIGHTED, "mean", "count"]:
        _close(ours[name], theirs[name], name)
    if default is None:  # pixels with elevation but no population count: NaN
        assert ours["weighted_mean"].isna().sum() >= len(GAPPED)
        assert ours["weighted_mean"].notna().any()
    else:
        assert ours["weighted_mean"].notna().all()
        assert not np.allclose(ours["weighted_mean"], ours["mean"])  # the weights weigh


def _upsampled(path: Path, factor: int) -> np.ndarray:
    with rasterio.open(path) as ds:
        w = ds.read(1).astype(np.float64)
        w[w == ds.nodata] = np.nan
    return np.repeat(np.repeat(w, factor, axis=0), factor, axis=1)


@pytest.mark.parametrize(("default", "touched"), [(None, False), (0.5, False), (0.5, True)])
def test_weighted_moments_with_the_centre_rule_equal_numpy(
        sm_store: pz.ParcelStore, concelhos: gpd.GeoDataFrame, gaps: Path,
        default: float | None, touched: bool) -> None:
    """Without coverage weights each pixel whose centre is inside (or, all_touched, that the
    parcel touches) weighs its weight alone (c_i = 1): numpy on rasterio's burn, weights
    upsampled by repetition (4x)."""
    ours = sm_store.zonal_stats(concelhos, bands=["dem"], stats=WEIGHTED, all_touched=touched,
                                weights_band="gaps", default_weight=default)
    with rasterio.open(DEM) as ds:
        dem = ds.read(1).astype(np.float64)
        ok = dem != ds.nodata
        shape, transform = ds.shape, ds.transform
    pop = _upsampled(gaps, 4)
    assert pop.shape == dem.shape
    if default is not None:
        pop = np.where(np.isnan(pop), default, pop)
    for i, geom in enumerate(concelhos.geometry):
        inside = ~geometry_mask([geom], shape, transform, all_touched=touched) & ok
        x, w = dem[inside], pop[inside]
        total = w.sum()
        mean = (x * w).sum() / total
        var = (w * (x - mean) ** 2).sum() / total
        row = ours.iloc[i]
        _close(row["weighted_sum"], (x * w).sum(), f"sum {i}")
        _close(row["weighted_mean"], mean, f"mean {i}")
        _close(row["weighted_variance"], var, f"variance {i}")
        _close(row["weighted_stdev"], np.sqrt(var), f"stdev {i}")


# -- Slovenia: a time series weighted by static and per-date layers -------------------------
@pytest.fixture(scope="module")
def slo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The NDVI stack and its cloud mask in a store, with weights written beside it: the DEM
    with a block of nodata (static, one date), ``1 - CLM`` per date (for exactextract)."""
    tmp = tmp_path_factory.mktemp("slo-weights")
    times = json.loads((SLO / "timestamps.json").read_text())
    with rasterio.open(SLO / "DEM.tif") as ds:
        dem = ds.read(1)
        profile = ds.profile | {"nodata": -9999.0, "dtype": "float32"}
    dem = dem.astype(np.float32)
    dem[10:40, 60:90] = -9999.0  # nodata weights over some parcels
    weights = tmp / "dem_weights.tif"
    with rasterio.open(weights, "w", **profile) as out:
        out.write(dem, 1)
    with rasterio.open(SLO / "CLM_68dates.tif") as ds:
        clear = 1.0 - ds.read().astype(np.float32)
        cprofile = ds.profile | {"dtype": "float32", "nodata": None}
    clear_tif = tmp / "clear.tif"
    with rasterio.open(clear_tif, "w", **cprofile) as out:
        out.write(clear)
    url = str(tmp / "slo.zarr")
    pz.ingest(str(SLO / "NDVI_68dates.tif"), url, band="NDVI", times=times, chunk_size=32,
              quiet=True)
    pz.ingest(str(SLO / "CLM_68dates.tif"), url, band="CLM", times=times, chunk_size=32,
              quiet=True)
    pz.ingest(str(weights), url, band="W", time=times[5], chunk_size=32, quiet=True)
    return {"store": pz.open_store(url), "times": np.array(times, dtype="datetime64[s]"),
            "weights": weights, "clear": clear_tif,
            "parcels": gpd.read_file(SLO / "LULC.gpkg")}


@pytest.mark.parametrize("default", [None, 1.0])
def test_static_weights_weigh_every_date_as_exactextract(slo: dict[str, Any],
                                                         default: float | None) -> None:
    """A weights layer of one date (2015-08) weighs NDVI on other dates too."""
    store, parcels = slo["store"], slo["parcels"]
    bands = [12, 40, 60]
    ours = store.zonal_stats(parcels, bands=["NDVI"], stats=[*WEIGHTED, "count"],
                             weights="coverage",
                             time=[str(slo["times"][b - 1]) for b in bands], weights_band="W",
                             default_weight=default)
    nan_rows = 0
    for k, b in enumerate(bands):
        mine = ours[ours["time"] == slo["times"][b - 1]].reset_index(drop=True)
        theirs = _ee_weighted(SLO / "NDVI_68dates.tif", b, slo["weights"], 1,
                              parcels.geometry, default)
        for name in WEIGHTED:
            _close(mine[name], theirs[name], f"{name} band {b}")
        nan_rows += int((mine["weighted_mean"].isna() & (mine["count"] > 0)).sum())
        if k == 0:
            assert mine["weighted_mean"].notna().sum() > 40
    assert (nan_rows > 0) == (default is None)


def test_per_date_weights_from_an_expression_equal_exactextract(slo: dict[str, Any]) -> None:
    """``1 - CLM``: each date weighed by its own clear-sky layer (an expression)."""
    store, parcels = slo["store"], slo["parcels"]
    bands = [3, 30, 55]
    ours = store.zonal_stats(parcels, bands=["NDVI"], stats=[*WEIGHTED, "mean"],
                             weights="coverage",
                             time=[str(slo["times"][b - 1]) for b in bands],
                             weights_band="1 - CLM")
    assert set(ours["band"]) == {"NDVI"}
    differs = False
    for b in bands:
        mine = ours[ours["time"] == slo["times"][b - 1]].reset_index(drop=True)
        theirs = _ee_weighted(SLO / "NDVI_68dates.tif", b, slo["clear"], b, parcels.geometry)
        for name in WEIGHTED:
            _close(mine[name], theirs[name], f"{name} band {b}")
        differs |= not np.allclose(mine["weighted_mean"], mine["mean"], equal_nan=True)
    assert differs  # clouds on some of these dates: the weights change the means


def test_weighted_monthly_composites_equal_exactextract_on_a_numpy_composite(
        slo: dict[str, Any], tmp_path: Path) -> None:
    store, parcels, times = slo["store"], slo["parcels"], slo["times"]
    ours = store.zonal_stats(parcels, bands=["NDVI"], stats=WEIGHTED, weights="coverage",
                             time="2016-03/2016-05", interval="1MS", composite="median",
                             weights_band="W", default_weight=0)
    with rasterio.open(SLO / "NDVI_68dates.tif") as ds:
        ndvi, profile = ds.read().astype(np.float64), ds.profile
    months = times.astype("datetime64[M]")
    labels = np.unique(months[(times >= np.datetime64("2016-03-01"))
                              & (times < np.datetime64("2016-06-01"))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        comp = np.stack([np.nanmedian(ndvi[months == m], axis=0) for m in labels])
    path = tmp_path / "composite.tif"
    with rasterio.open(path, "w", **(profile | {"count": len(labels), "dtype": "float64"})) as out:
        out.write(comp)
    assert sorted(set(ours["time"])) == list(labels.astype("datetime64[s]"))
    for k, m in enumerate(labels):
        mine = ours[ours["time"] == m.astype("datetime64[s]")].reset_index(drop=True)
        theirs = _ee_weighted(path, k + 1, slo["weights"], 1, parcels.geometry, 0.0)
        for name in WEIGHTED:
            _close(mine[name], theirs[name], f"{name} {m}")


def test_weights_through_dask_streaming_and_the_cli(slo: dict[str, Any],
                                                    tmp_path: Path) -> None:
    """Every path takes weights_band: the Dask partitions, the streamed batches and the CLI
    give the in-process result, which equals exactextract (above)."""
    from distributed import Client, LocalCluster

    store, parcels = slo["store"], slo["parcels"]
    kw: dict[str, Any] = {"bands": ["NDVI"], "stats": ["weighted_mean", "weighted_sum"],
                          "time": "2016-04", "weights": "coverage", "weights_band": "W"}
    direct = store.zonal_stats(parcels, **kw)
    assert direct["weighted_mean"].notna().any()
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = store.zonal_stats(parcels, scheduler=client, **kw)
    pd.testing.assert_frame_equal(on_dask, direct)
    src = tmp_path / "parcels.parquet"
    parcels.to_parquet(src)
    streamed = tmp_path / "streamed.parquet"
    stream_zonal_stats(store, src, streamed, batch_size=25, **kw)
    got = pd.read_parquet(streamed).sort_values(["parcel_id", "time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, direct.sort_values(["parcel_id", "time"]).reset_index(
        drop=True), check_dtype=False)
    out = tmp_path / "cli.parquet"
    res = CliRunner().invoke(main, ["stats", store.url, str(SLO / "LULC.gpkg"), "--out",
                                    str(out), "--bands", "NDVI", "--stats",
                                    "weighted_mean,weighted_sum", "--time", "2016-04",
                                    "--coverage", "--weights-band", "W", "--quiet"])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), direct, check_dtype=False)
    res = CliRunner().invoke(main, ["stats", store.url, str(src), "--out", str(out),
                                    "--bands", "NDVI", "--stats", "weighted_mean",
                                    "--time", "2016-04", "--coverage", "--weights-band", "W",
                                    "--default-weight", "0", "--interval", "1MS",
                                    "--composite", "max", "--batch-size", "40", "--quiet"])
    assert res.exit_code == 0, res.output  # streamed batches take composites too
    zero = store.zonal_stats(parcels, **(kw | {"stats": ["weighted_mean"], "default_weight": 0,
                                              "interval": "1MS", "composite": "max"}))
    assert len(zero) == len(parcels)  # one composite (April) per parcel
    got = pd.read_parquet(out).sort_values(["parcel_id", "time"]).reset_index(drop=True)
    _close(got["weighted_mean"], zero.sort_values(["parcel_id", "time"])["weighted_mean"],
           "streamed CLI")


def test_weights_are_checked(slo: dict[str, Any], sm_store: pz.ParcelStore,
                             concelhos: gpd.GeoDataFrame) -> None:
    store, parcels = slo["store"], slo["parcels"].iloc[:3]
    with pytest.raises(ValueError, match="weights_band="):
        store.zonal_stats(parcels, bands=["NDVI"], stats="weighted_mean", time="2016-04")
    with pytest.raises(ValueError, match="weights_band="):
        store.zonal_stats(parcels, bands=["NDVI"], stats="weighted_frac", time="2016-04")
    with pytest.raises(ValueError, match="weighted_\\* statistics"):
        store.zonal_stats(parcels, bands=["NDVI"], stats="mean", weights_band="W")
    with pytest.raises(ValueError, match="give weights_band too"):
        store.zonal_stats(parcels, bands=["NDVI"], stats="mean", default_weight=0)
    with pytest.raises(BandNotFoundError, match="no such band"):
        store.zonal_stats(parcels, bands=["NDVI"], stats="weighted_mean", weights_band="POP")
    with pytest.raises(ValueError, match="several dates"):  # per-date weights in composites
        store.zonal_stats(parcels, bands=["NDVI"], stats="weighted_mean", interval="1MS",
                          weights_band="1 - CLM")
    with pytest.raises(ValueError, match="cannot be mixed"):
        store.zonal_stats(parcels, stats=["weighted_frac", "mean"], weights_band="W")
    with pytest.raises(ValueError, match="finite number"):
        store.zonal_stats(parcels, bands=["NDVI"], stats="weighted_mean", weights_band="W",
                          default_weight=float("inf"))
    # weights finer than the values: exactextract would refine the values' grid; refused
    with pytest.raises(BandNotFoundError, match="whole multiple"):
        sm_store.zonal_stats(concelhos.iloc[:1], bands=["pop"], stats="weighted_mean",
                             weights_band="clc")
    plain = store.plan(parcels, bands=["NDVI"], stats="mean", time="2016-04")
    weighted = store.plan(parcels, bands=["NDVI"], stats="weighted_mean", time="2016-04",
                          weights_band="W")
    assert weighted.requests > plain.requests  # the dry run counts the weights' chunks
    res = CliRunner().invoke(main, ["plan", store.url, str(SLO / "LULC.gpkg"), "--bands", "NDVI",
                                    "--stats", "weighted_mean", "--time", "2016-04",
                                    "--weights-band", "W", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["requests"] > store.plan(
        str(SLO / "LULC.gpkg"), bands=["NDVI"], stats="mean", time="2016-04").requests


def test_default_bands_leave_the_weights_layer_out(sm_store: pz.ParcelStore,
                                                   concelhos: gpd.GeoDataFrame) -> None:
    df = sm_store.zonal_stats(concelhos.iloc[:2], stats="weighted_mean", weights_band="pop",
                              default_weight=0)
    assert set(df["band"]) == {"clc", "dem", "gaps"}  # all but the weights layer
