"""Time series for notebooks: masking by any layer, comparisons in band expressions and
per-interval composites (issue 12).

Oracle: numpy on the source GeoTIFFs of the real 68-date Slovenian stack (eo-learn's
``NDVI_68dates.tif`` and its cloud mask ``CLM_68dates.tif``, band i = ``timestamps.json``[i]),
read with rasterio, parcels burnt with rasterio's pixel-centre rule.
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
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import BandNotFoundError

from ._rasters import SHARED_DATA

SLO = SHARED_DATA / "eo-learn-slovenia"
pytestmark = pytest.mark.skipif(not SLO.exists(), reason="shared real data not available")


class Source:
    """The source stack read with rasterio, and the parcels' pixel-centre masks."""

    def __init__(self) -> None:
        with rasterio.open(SLO / "NDVI_68dates.tif") as ds:
            self.ndvi = ds.read().astype(np.float64)
            transform, shape = ds.transform, (ds.height, ds.width)
        with rasterio.open(SLO / "CLM_68dates.tif") as ds:
            self.clm = ds.read()
        self.times = np.array(json.loads((SLO / "timestamps.json").read_text()),
                              dtype="datetime64[s]")
        self.parcels = gpd.read_file(SLO / "LULC.gpkg")
        self.inside = [~geometry_mask([g], shape, transform) for g in self.parcels.geometry]
        # pixel centres of a parcel beyond the raster (some parcels cross its edge): nodata
        pad = 300
        big = (shape[0] + 2 * pad, shape[1] + 2 * pad)
        wide = transform @ Affine.translation(-pad, -pad)
        self.beyond = [int((~geometry_mask([g], big, wide)).sum()) - int(i.sum())
                       for g, i in zip(self.parcels.geometry, self.inside, strict=True)]

    def rows(self, layers: dict[Any, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
        """Per parcel and layer key: count, mean, median, max and nodata of the values
        ``(T?, y, x)`` where ``ok``."""
        out = []
        for key, (values, ok) in layers.items():
            for p, inside in enumerate(self.inside):
                v = values[inside & ok]
                out.append({"parcel_id": p, "key": key, "count": v.size,
                            "nodata": int((inside & ~ok).sum()) + self.beyond[p],
                            "mean": v.mean() if v.size else np.nan,
                            "median": np.median(v) if v.size else np.nan,
                            "max": v.max() if v.size else np.nan})
        return pd.DataFrame(out)


@pytest.fixture(scope="module")
def src() -> Source:
    return Source()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, src: Source) -> pz.ParcelStore:
    url = str(tmp_path_factory.mktemp("slo") / "slo.zarr")
    times = [str(t) for t in src.times]
    pz.ingest(str(SLO / "NDVI_68dates.tif"), url, band="NDVI", times=times, chunk_size=32,
              quiet=True)
    pz.ingest(str(SLO / "CLM_68dates.tif"), url, band="CLM", times=times, chunk_size=32,
              quiet=True)
    return pz.open_store(url)


def _check(ours: pd.DataFrame, ref: pd.DataFrame, stats: list[str]) -> None:
    assert len(ours) == len(ref)
    np.testing.assert_array_equal(ours["parcel_id"], ref["parcel_id"])
    for s in stats:
        if s in ("count", "nodata"):
            np.testing.assert_array_equal(ours[s].to_numpy(), ref[s].to_numpy(), err_msg=s)
        else:
            np.testing.assert_allclose(ours[s].to_numpy(float), ref[s].to_numpy(float),
                                       rtol=1e-9, atol=1e-12, err_msg=s)


def test_mask_by_a_cloud_layer_with_its_classes(store: pz.ParcelStore, src: Source) -> None:
    ti = np.flatnonzero((src.times >= np.datetime64("2016-01-01"))
                        & (src.times < np.datetime64("2017-01-01")))
    df = store.zonal_stats(src.parcels, bands=["NDVI"], stats="count,mean,median,nodata",
                           mask="CLM", mask_classes=[1], time="2016")
    ref = src.rows({t: (src.ndvi[t], ~np.isnan(src.ndvi[t]) & (src.clm[t] != 1))
                    for t in ti})
    ref["time"] = src.times[ref["key"].to_numpy()]
    ref = ref.sort_values(["parcel_id", "time"], kind="stable").reset_index(drop=True)
    np.testing.assert_array_equal(df["time"].to_numpy(), ref["time"].to_numpy())
    _check(df, ref, ["count", "mean", "median", "nodata"])
    # the mask removed real pixels: cloudy dates lose them
    plain = store.zonal_stats(src.parcels, bands=["NDVI"], stats="count", time="2016")
    assert (df["count"] < plain["count"]).sum() > 200
    assert (df["count"] == 0).sum() > 50  # fully clouded parcel-dates: count 0, no error


def test_mask_layer_needs_its_classes_and_must_exist(store: pz.ParcelStore,
                                                     src: Source) -> None:
    with pytest.raises(ValueError, match="mask='CLM' needs mask_classes"):
        store.zonal_stats(src.parcels, bands=["NDVI"], mask="CLM", time="2016-07")
    with pytest.raises(ValueError, match="needs mask="):
        store.zonal_stats(src.parcels, bands=["NDVI"], mask_classes=[1], time="2016-07")
    with pytest.raises(ValueError, match="mask='QA': no such layer in the store"):
        store.zonal_stats(src.parcels, bands=["NDVI"], mask="QA", mask_classes=[1])
    with pytest.raises(BandNotFoundError, match="SCL"):
        store.zonal_stats(src.parcels, bands=["NDVI"], mask="scl")


def test_comparisons_and_where_in_expressions(store: pz.ParcelStore, src: Source) -> None:
    exprs = {
        "NDVI > 0.5": lambda x: (x > 0.5).astype(float),
        "where(NDVI >= 0.3, NDVI, -1)": lambda x: np.where(x >= 0.3, x, -1.0),
        "0.2 < NDVI <= 0.6": lambda x: ((x > 0.2) & (x <= 0.6)).astype(float),
        "not NDVI > 0.5 and NDVI != 0 or NDVI < -0.1":
            lambda x: (((x <= 0.5) & (x != 0)) | (x < -0.1)).astype(float),
    }
    ti = np.flatnonzero((src.times >= np.datetime64("2016-05-01"))
                        & (src.times < np.datetime64("2016-08-01")))
    df = store.zonal_stats(src.parcels, indices=list(exprs), stats="count,mean,max",
                           time="2016-05/2016-07")
    for text, fn in exprs.items():
        ours = df[df["band"] == text].reset_index(drop=True)
        ref = src.rows({t: (fn(src.ndvi[t]), ~np.isnan(src.ndvi[t])) for t in ti})
        ref["time"] = src.times[ref["key"].to_numpy()]
        ref = ref.sort_values(["parcel_id", "time"], kind="stable").reset_index(drop=True)
        _check(ours, ref, ["count", "mean", "max"])
    # a comparison is 0/1: its mean is the parcel's fraction above the threshold
    frac = df[df["band"] == "NDVI > 0.5"]["mean"].dropna()
    assert ((frac > 0) & (frac < 1)).sum() > 20


@pytest.mark.parametrize("text", ["NDVI is NDVI", "NDVI in NDVI", "NDVI < " * 300 + "NDVI",
                                  "where(NDVI > 0)", "NDVI if NDVI > 0 else 0",
                                  "(NDVI > 0) < (" * 40 + "NDVI" + ")" * 40])
def test_unsafe_or_oversized_comparisons_are_refused(text: str) -> None:
    from parcelzarr.query._expr import parse_expression

    with pytest.raises(ValueError, match=r"^expression ") as info:
        parse_expression(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def _composite_ref(src: Source, how: str, *, mask: bool, since: str, until: str
                   ) -> pd.DataFrame:
    """numpy: per month, the pixel-wise ``how`` of the valid observations, then per parcel."""
    sel = (src.times >= np.datetime64(since)) & (src.times < np.datetime64(until))
    months = src.times.astype("datetime64[M]")
    layers = {}
    for m in np.unique(months[sel]):
        ti = np.flatnonzero(sel & (months == m))
        ok = ~np.isnan(src.ndvi[ti])
        if mask:
            ok &= src.clm[ti] != 1
        v = np.where(ok, src.ndvi[ti], np.nan)
        any_ok = ok.any(axis=0)
        with warnings.catch_warnings():  # all-NaN pixels: NaN, marked by any_ok
            warnings.simplefilter("ignore", RuntimeWarning)
            comp = {"median": np.nanmedian, "max": np.nanmax, "mean": np.nanmean}[how](v, axis=0)
        layers[m.astype("datetime64[s]")] = (comp, any_ok)
    ref = src.rows(layers).rename(columns={"key": "time"})
    return ref.sort_values(["parcel_id", "time"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize(("how", "mask"), [("median", True), ("max", False), ("mean", True)])
def test_monthly_composites_equal_numpy(store: pz.ParcelStore, src: Source, how: str,
                                        mask: bool) -> None:
    kw: dict[str, Any] = {"mask": "CLM", "mask_classes": [1]} if mask else {}
    df = store.zonal_stats(src.parcels, bands=["NDVI"], stats="count,mean,median,max,nodata",
                           interval="1MS", composite=how, time="2015-12/2016-06", **kw)
    ref = _composite_ref(src, how, mask=mask, since="2015-12-01", until="2016-07-01")
    np.testing.assert_array_equal(df["time"].to_numpy(), ref["time"].to_numpy())
    assert set(pd.to_datetime(df["time"]).dt.day) == {1}
    _check(df, ref, ["count", "mean", "median", "max", "nodata"])
    # several dates fell in one month: compositing changed the values
    single = store.zonal_stats(src.parcels, bands=["NDVI"], stats="mean", time="2015-12-08")
    assert len(single) == 2 * len(src.parcels)  # two acquisitions that day


def test_composite_rows_for_parcels_outside_are_interval_rows(store: pz.ParcelStore,
                                                              src: Source) -> None:
    far = shapely.box(0, 0, 100, 100)
    parcels = gpd.GeoDataFrame(geometry=[src.parcels.geometry[0], far], crs=src.parcels.crs)
    df = store.zonal_stats(parcels, bands=["NDVI"], stats="count,mean", interval="1MS",
                           time="2016-01/2016-03")
    out = df[df["parcel_id"] == 1]
    assert list(out["status"].unique()) == ["outside"]
    np.testing.assert_array_equal(out["time"].to_numpy(),
                                  df[df["parcel_id"] == 0]["time"].to_numpy())
    assert list(pd.to_datetime(out["time"]).dt.strftime("%Y-%m-%d")) == [
        "2016-01-01", "2016-02-01", "2016-03-01"]


def test_composite_options_are_checked(store: pz.ParcelStore, src: Source) -> None:
    with pytest.raises(ValueError, match="needs interval="):
        store.zonal_stats(src.parcels, bands=["NDVI"], composite="max")
    with pytest.raises(ValueError, match="is not a time interval"):
        store.zonal_stats(src.parcels, bands=["NDVI"], interval="monthly")
    with pytest.raises(ValueError, match="composite='mode'"):
        store.zonal_stats(src.parcels, bands=["NDVI"], interval="1MS", composite="mode")
    with pytest.raises(ValueError, match="categorical"):
        store.zonal_stats(src.parcels, bands=["CLM"], interval="1MS", categorical=True)


def test_cli_composite_with_mask_layer(store: pz.ParcelStore, src: Source,
                                       tmp_path: Path) -> None:
    parcels = tmp_path / "lulc.gpkg"
    src.parcels.to_file(parcels)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(main, [
        "stats", store.url, str(parcels), "--out", str(out), "--bands", "NDVI",
        "--stats", "count,mean,median,max,nodata", "--time", "2015-12/2016-06",
        "--mask", "CLM", "--mask-classes", "1", "--interval", "1MS", "--composite", "median",
        "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out, parse_dates=["time"])
    ref = _composite_ref(src, "median", mask=True, since="2015-12-01", until="2016-07-01")
    np.testing.assert_array_equal(df["time"].to_numpy("datetime64[s]"),
                                  ref["time"].to_numpy("datetime64[s]"))
    _check(df, ref, ["count", "mean", "median", "max", "nodata"])
    bad = CliRunner().invoke(main, ["stats", store.url, str(parcels), "--out", str(out),
                                    "--mask", "CLM", "--mask-classes", "cloud"])
    assert bad.exit_code == 2 and "--mask-classes" in bad.output
    # --mask alone is still the SCL mask (this store has none: said so)
    scl = CliRunner().invoke(main, ["stats", store.url, str(parcels), "--out", str(out),
                                    "--mask", "--quiet"])
    assert scl.exit_code == 2 and "needs the Sentinel-2 scene classification band SCL" in (
        scl.output)


def test_composites_with_mask_layer_on_dask(store: pz.ParcelStore, src: Source) -> None:
    """The Dask path passes the mask layer and the interval through to every partition."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        df = store.zonal_stats(src.parcels, bands=["NDVI"],
                               stats="count,mean,median,max,nodata", interval="1MS",
                               composite="max", time="2015-12/2016-06", mask="CLM",
                               mask_classes=[1], scheduler=client)
    ref = _composite_ref(src, "max", mask=True, since="2015-12-01", until="2016-07-01")
    np.testing.assert_array_equal(df["time"].to_numpy(), ref["time"].to_numpy())
    _check(df, ref, ["count", "mean", "median", "max", "nodata"])
