"""zonal_stats as an xvec vector cube and as a wide frame, against xvec's own zonal_stats.

The reference reads the source GeoTIFF (the 68-date Slovenian NDVI stack of
../shared/data/eo-learn-slovenia) through rioxarray and reduces it with
``DataArray.xvec.zonal_stats(method="rasterize")`` (pixel-centre rule, as parcelzarr's
default); parcelzarr reads only its own store.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray
import xarray as xr
import xvec  # noqa: F401  (registers the .xvec accessor)
from rasterstats import zonal_stats as rs_zonal_stats

import parcelzarr as pz

from ._rasters import SHARED_DATA

EO = SHARED_DATA / "eo-learn-slovenia"
pytestmark = pytest.mark.skipif(not EO.exists(), reason="shared real data not available")
STATS = ["count", "mean", "std", "min", "max", "median"]


@pytest.fixture(scope="module")
def times() -> list[str]:
    return list(json.loads((EO / "timestamps.json").read_text()))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, times: list[str]) -> pz.ParcelStore:
    url = str(tmp_path_factory.mktemp("cube") / "eo.zarr")
    pz.ingest(str(EO / "NDVI_68dates.tif"), url, band="NDVI", times=times, quiet=True,
              chunk_size=32)
    return pz.open_store(url)


@pytest.fixture(scope="module")
def parcels() -> gpd.GeoDataFrame:
    return gpd.read_file(EO / "LULC.gpkg")


@pytest.fixture(scope="module")
def reference(parcels: gpd.GeoDataFrame, times: list[str]) -> xr.DataArray:
    """xvec's zonal statistics of the source GeoTIFF: (geometry, zonal_statistics, time)."""
    src = rioxarray.open_rasterio(EO / "NDVI_68dates.tif", masked=True).load()
    src = src.rename(band="time").assign_coords(time=pd.to_datetime(times).to_numpy())
    # The parcels cover every pixel of the patch, which xvec 0.5's rasterize cannot take
    # (it expects a background pixel): add one empty column east of the patch.
    step = float(src.x[1] - src.x[0])
    src = src.pad(x=(0, 1), constant_values=np.nan)
    src = src.assign_coords(x=float(src.x[0]) + step * np.arange(src.sizes["x"]))
    return src.xvec.zonal_stats(parcels.geometry.to_numpy(), x_coords="x", y_coords="y",
                                stats=STATS, method="rasterize", n_jobs=1)


@pytest.fixture(scope="module")
def cube(store: pz.ParcelStore, parcels: gpd.GeoDataFrame) -> xr.Dataset:
    out = store.zonal_stats(parcels, stats=STATS, output="xarray")
    assert isinstance(out, xr.Dataset)
    return out


def _theirs(reference: xr.DataArray, stat: str) -> np.ndarray:
    vals = reference.sel(zonal_statistics=stat).transpose("geometry", "time").to_numpy()
    if stat == "count":  # xvec: NaN for a parcel that covers no pixel centre
        vals = np.nan_to_num(vals, nan=0.0)
    return vals.astype(np.float64)


def test_cube_equals_xvec_zonal_stats_of_the_source(cube: xr.Dataset, reference: xr.DataArray,
                                                    parcels: gpd.GeoDataFrame) -> None:
    assert dict(cube.sizes) == {"geometry": len(parcels), "time": 68, "band": 1}
    assert cube.xvec.geom_coords_indexed.xindexes["geometry"].crs == parcels.crs
    assert list(cube.geometry.values) == list(parcels.geometry.values)
    np.testing.assert_array_equal(cube["parcel_id"].to_numpy(), parcels.index.to_numpy())
    np.testing.assert_array_equal(cube["time"].to_numpy(), reference["time"].to_numpy())
    for stat in STATS:
        ours = cube[stat].sel(band="NDVI").transpose("geometry", "time").to_numpy()
        # xvec reduces float32 in float32: agree to its rounding
        np.testing.assert_allclose(ours.astype(np.float64), _theirs(reference, stat),
                                   rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=stat)
    assert cube["count"].dtype.kind == "i"
    assert (cube["status"] != "").all()


def test_cube_selects_by_id_and_plots_a_time_series_per_parcel(cube: xr.Dataset) -> None:
    import matplotlib

    matplotlib.use("Agg")
    one = cube.sel(parcel_id=5)["mean"].sel(band="NDVI")
    assert one.dims == ("time",)
    lines = cube["mean"].sel(band="NDVI").isel(geometry=slice(0, 3)).plot.line(
        x="time", hue="parcel_id")
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[1].get_ydata(), cube["mean"].isel(geometry=1, band=0))


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_cube_round_trips_through_xvec_cf_encoding(cube: xr.Dataset, tmp_path: Path,
                                                   suffix: str) -> None:
    path = tmp_path / f"cube{suffix}"
    encoded = cube.xvec.encode_cf()
    if suffix == ".zarr":
        encoded.to_zarr(path, mode="w")
        back = xr.open_zarr(path).load().xvec.decode_cf()
    else:
        encoded.to_netcdf(path)
        with xr.open_dataset(path) as ds:
            back = ds.load().xvec.decode_cf()
    def crs(ds: xr.Dataset) -> object:
        return ds.xvec.geom_coords_indexed.xindexes["geometry"].crs

    assert crs(back) == crs(cube)
    assert list(back.geometry.values) == list(cube.geometry.values)
    for name in [*STATS, "status", "parcel_id", "band", "time"]:
        np.testing.assert_array_equal(back[name].to_numpy(), cube[name].to_numpy(),
                                      err_msg=name)


def test_wide_frame_names_columns_band_stat(store: pz.ParcelStore, parcels: gpd.GeoDataFrame,
                                            reference: xr.DataArray) -> None:
    wide = store.zonal_stats(parcels, stats=["count", "mean"], output="wide",
                             time="2016")
    assert isinstance(wide, pd.DataFrame)
    assert list(wide.columns) == ["parcel_id", "time", "NDVI_count", "NDVI_mean", "status"]
    year = reference.sel(time=slice("2016-01-01", "2016-12-31"))
    assert len(wide) == len(parcels) * year.sizes["time"]
    assert wide["NDVI_count"].dtype.kind == "i"
    for stat in ("count", "mean"):
        theirs = _theirs(year, stat)  # (parcel, time), parcels in index order
        ours = wide.pivot(index="parcel_id", columns="time", values=f"NDVI_{stat}")
        np.testing.assert_allclose(ours.loc[parcels.index].to_numpy(np.float64), theirs,
                                   rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=stat)


def test_wide_frame_has_columns_per_band_of_a_real_s2_image(tmp_path: Path) -> None:
    """Two bands: columns ``{band}_{stat}`` for each, one row per (parcel, date), as
    exactextract names the columns of a multi-band raster."""
    aber = SHARED_DATA / "rsgislib-aber"
    tif = aber / "sen2_20210527_aber_rebuilt.tif"
    url = str(tmp_path / "aber.zarr")
    pz.ingest(str(tif), url, band="S2", time="2021-05-27", quiet=True, chunk_size=128)
    store = pz.open_store(url)
    box = store.grids[next(iter(store.grids))].spec.bounds
    gdf = gpd.GeoDataFrame(geometry=gpd.GeoSeries.from_xy([box[0] + 1500], [box[3] - 1500])
                           .buffer(200), crs=store.grids[next(iter(store.grids))].spec.crs)
    bands = ["S2_3", "S2_4"]  # file bands 3 and 4 (generic band names: {band}_{i})
    assert set(bands) <= set(store.bands)
    wide = store.zonal_stats(gdf, bands=bands, stats=["mean", "max"], output="wide")
    assert list(wide.columns) == ["parcel_id", "time", *(f"{b}_{s}" for b in bands
                                                          for s in ("mean", "max")), "status"]
    for b in bands:
        theirs = rs_zonal_stats(gdf.geometry, str(tif), band=int(b.split("_")[1]),
                                stats=["mean", "max"])[0]
        assert wide[f"{b}_mean"].iloc[0] == pytest.approx(theirs["mean"], rel=1e-12)
        assert wide[f"{b}_max"].iloc[0] == theirs["max"]


def test_output_is_checked(store: pz.ParcelStore, parcels: gpd.GeoDataFrame) -> None:
    with pytest.raises(ValueError, match="output='cube'"):
        store.zonal_stats(parcels, output="cube")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="categorical"):
        store.zonal_stats(parcels, categorical=True, output="xarray")
