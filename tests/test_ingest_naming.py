"""Named multi-band layers, their reflectance, duplicates, ``info`` and the root's
self-description (issue 8, items 4 and 6).

Real data from ../shared/data: the Sentinel-2 L2A subset of Luxembourg (terra-lux: bands
B02/B03/B04/B08 named in the band descriptions, raw DNs, EPSG:4326) and its municipalities.
Oracles: rasterio/numpy on the source GeoTIFF; parcelzarr only reads its own store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import IngestConflictError, InvalidSourceError, ReflectanceWarning

from ._rasters import SHARED_DATA, scene_data, write_tif

LUX = SHARED_DATA / "terra-lux"
L2A = LUX / "sent2_L2A_2024-08-24.tif"
needs_data = pytest.mark.skipif(not LUX.exists(), reason="shared real data not available")


def _reflectance_oracle(parcels: gpd.GeoDataFrame) -> dict[str, list[float]]:
    """Per-parcel mean NDVI and EVI from the source DNs: reflectance = DN * 1e-4 - 0.1."""
    with rasterio.open(L2A) as src:
        names = list(src.descriptions)
        refl = {n: src.read(i + 1).astype(np.float64) * 1e-4 - 0.1 for i, n in enumerate(names)}
        transform, shape = src.transform, (src.height, src.width)
    blue, red, nir = refl["B02"], refl["B04"], refl["B08"]
    ndvi = (nir - red) / (nir + red)
    evi = 2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)
    out: dict[str, list[float]] = {"ndvi": [], "evi": []}
    for geom in parcels.geometry:
        inside = ~geometry_mask([geom], shape, transform)
        ok = inside & np.isfinite(ndvi) & np.isfinite(evi)
        out["ndvi"].append(float(ndvi[ok].mean()) if ok.any() else np.nan)
        out["evi"].append(float(evi[ok].mean()) if ok.any() else np.nan)
    return out


@needs_data
def test_named_l2a_file_with_declared_reflectance(tmp_path: Path) -> None:
    url = str(tmp_path / "lux.zarr")
    # no --band needed: the band descriptions B02..B08 are the band names
    pz.ingest([str(L2A)], url, time="2024-08-24", scale=0.0001, offset=-0.1, quiet=True)
    store = pz.open_store(url)
    assert store.bands == ["B02", "B03", "B04", "B08"]
    grid = next(iter(store.grids.values()))
    assert grid.bands["B04"]["scale_factor"] == 0.0001
    assert grid.bands["B04"]["add_offset"] == -0.1
    lux = gpd.read_file(LUX / "lux.shp")
    df = store.zonal_stats(lux, indices=["ndvi", "evi"], stats="mean")
    expect = _reflectance_oracle(lux)
    for index in ("ndvi", "evi"):
        got = df[df["band"] == index]["mean"].to_numpy()
        np.testing.assert_allclose(got, expect[index], rtol=1e-9, equal_nan=True)
    assert df[df["band"] == "evi"]["mean"].max() < 1.0  # issue 8: EVI 2.6 on raw DNs
    # xarray decodes the same reflectance
    ds = store.to_xarray()
    with rasterio.open(L2A) as src:
        dn = src.read(3)
        r0 = round((grid.spec.y0 - src.transform.f) / grid.spec.res_y)
        c0 = round((src.transform.c - grid.spec.x0) / grid.spec.res_x)
    got = ds.B04[0].values[r0:r0 + dn.shape[0], c0:c0 + dn.shape[1]]
    np.testing.assert_allclose(got, dn * 1e-4 - 0.1, rtol=1e-6, equal_nan=True)


@needs_data
def test_index_on_a_layer_without_scale_warns(tmp_path: Path) -> None:
    url = str(tmp_path / "raw.zarr")
    pz.ingest([str(L2A)], url, time="2024-08-24", quiet=True)
    store = pz.open_store(url)
    lux = gpd.read_file(LUX / "lux.shp")
    with pytest.warns(ReflectanceWarning, match=r"ndvi reads band\(s\) B04, B08.*--scale"):
        store.zonal_stats(lux, indices=["ndvi"], stats="mean")
    # a later date of the same band with another scale is refused (one band, one scale)
    other = tmp_path / "lux_0825.tif"
    shutil.copy(L2A, other)
    with pytest.raises(IngestConflictError, match="scale/offset"):
        pz.ingest([str(other)], url, time="2024-08-25", scale=0.0001, offset=-0.1, quiet=True)


@needs_data
def test_bands_filter_and_cli_scale(tmp_path: Path) -> None:
    url = str(tmp_path / "cli.zarr")
    res = CliRunner().invoke(main, ["ingest", str(L2A), "--store", url, "--time", "2024-08-24",
                                    "--bands", "B04,B08", "--scale", "0.0001", "--offset",
                                    "-0.1", "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["info", url, "--json"])
    info = json.loads(res.output)
    (grid,) = info["grids"].values()
    assert sorted(grid["bands"]) == ["B04", "B08"]
    assert grid["bands"]["B08"]["scale_factor"] == 0.0001
    assert grid["bands"]["B08"]["add_offset"] == -0.1
    with rasterio.open(L2A) as src:
        nir = src.read(4)
    stored = pz.open_store(url)._array(next(iter(info["grids"])), "B08")
    assert np.nansum(np.asarray(stored[0]), dtype=np.float64) == pytest.approx(
        np.nansum(nir, dtype=np.float64))
    # descriptions that are not names still need --band
    plain = write_tif(tmp_path / "stack.tif", scene_data((40, 40), 1))
    with rasterio.open(plain) as src:
        profile = src.profile | {"count": 2}
        data = src.read(1)
    two = tmp_path / "two.tif"
    with rasterio.open(two, "w", **profile) as dst:
        dst.write(np.stack([data, data]))
        dst.set_band_description(1, "red edge")
        dst.set_band_description(2, "nir")
    with pytest.raises(InvalidSourceError, match="--band NAME"):
        pz.ingest([str(two)], str(tmp_path / "x.zarr"), time="2024-01-01", quiet=True)


@needs_data
def test_same_file_under_another_time_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "dup.zarr")
    pz.ingest([str(L2A)], url, time="2024-08-24", quiet=True)
    with pytest.raises(IngestConflictError, match=r"already in the store as .*/B02/2024-08-24"):
        pz.ingest([str(L2A)], url, time="2024-08-25", quiet=True)
    # the same bands under the same keys: a no-op, not a conflict
    report = pz.ingest([str(L2A)], url, time="2024-08-24", bands=["B04"], quiet=True)
    assert report.sources_written == 0
    res = CliRunner().invoke(main, ["ingest", str(L2A), "--store", url, "--time", "2024-08-25",
                                    "--quiet"])
    assert res.exit_code == 2 and "--force" in res.output
    res = CliRunner().invoke(main, ["ingest", str(L2A), "--store", url, "--time", "2024-08-25",
                                    "--force", "--quiet"])
    assert res.exit_code == 0, res.output
    assert [str(t)[:10] for t in next(iter(pz.open_store(url).grids.values())).times] == [
        "2024-08-24", "2024-08-25"]


def test_info_counts_data_objects_only(tmp_path: Path) -> None:
    empty = write_tif(tmp_path / "empty.tif", np.zeros((50, 60), "uint8"), nodata=0)
    url = str(tmp_path / "e.zarr")
    pz.ingest([str(empty)], url, band="lc", time="2021-01-01", quiet=True)
    info = pz.open_store(url).info()
    (grid,) = info["grids"].values()
    assert grid["bands"]["lc"]["objects"] == 0
    assert grid["bands"]["lc"]["stored_bytes"] == 0
    res = CliRunner().invoke(main, ["info", url])
    assert "0 objects" in res.output


@needs_data
def test_root_names_its_grids_and_opens_as_a_datatree(tmp_path: Path) -> None:
    url = str(tmp_path / "tree.zarr")
    pz.ingest([str(L2A)], url, time="2024-08-24", scale=0.0001, offset=-0.1, quiet=True)
    cdl = write_tif(tmp_path / "cdl.tif", np.full((40, 50), 5, "uint8"),
                    origin=(600_000.0, 1_950_000.0), res=30.0, crs="EPSG:5070", nodata=0)
    pz.ingest([str(cdl)], url, band="cdl", time="2023-01-01", quiet=True)
    grids = sorted(pz.open_store(url).grids)
    root = xr.open_zarr(url)  # no group: the root holds no arrays, but says where they are
    assert root.attrs["grids"] == grids
    assert "xr.open_datatree" in root.attrs["description"]
    tree = xr.open_datatree(url, engine="zarr")
    lux_grid = next(g for g in grids if g.startswith("epsg4326"))
    ds: Any = tree[lux_grid].to_dataset()
    with rasterio.open(L2A) as src:
        dn = src.read(2)
    spec = pz.open_store(url).grids[lux_grid].spec
    r0 = round((spec.y0 - src.transform.f) / spec.res_y)
    c0 = round((src.transform.c - spec.x0) / spec.res_x)
    np.testing.assert_allclose(ds.B03[0].values[r0:r0 + dn.shape[0], c0:c0 + dn.shape[1]],
                               dn * 1e-4 - 0.1, rtol=1e-6, equal_nan=True)
    assert int(tree["epsg5070/30m"].to_dataset().cdl[0].max()) == 5


def test_stac_raster_scale_and_offset_are_read(tmp_path: Path) -> None:
    """An L2A item whose assets declare their reflectance (raster extension v1 on B04, v2 on
    B08): stored values decode to DN * scale + offset as each asset declares."""
    b04 = write_tif(tmp_path / "b04.tif", scene_data((120, 140), seed=1))
    b08 = write_tif(tmp_path / "b08.tif", scene_data((120, 140), seed=2))
    item = {
        "type": "Feature", "id": "S2B_MSIL2A_20240615_T16TCK", "stac_version": "1.1.0",
        "properties": {"datetime": "2024-06-15T16:58:49Z", "s2:mgrs_tile": "16TCK",
                       "s2:processing_baseline": "05.10"},
        "assets": {
            # DNs without the -1000 offset, as the asset says (its baseline would say -0.1)
            "B04": {"href": b04.name, "raster:bands": [{"nodata": 0, "scale": 0.0001,
                                                        "offset": 0}]},
            "B08": {"href": b08.name, "raster:scale": 0.0001, "raster:offset": -0.1},
        },
        "geometry": None, "links": [],
    }
    stac = tmp_path / "item.json"
    stac.write_text(json.dumps(item))
    url = str(tmp_path / "stac.zarr")
    pz.ingest([str(stac)], url, quiet=True)
    ds = xr.open_zarr(url, group="utm16n/10m")
    spec = pz.open_store(url).grids["utm16n/10m"].spec
    for band, path, offset in (("B04", b04, 0.0), ("B08", b08, -0.1)):
        with rasterio.open(path) as src:
            dn = src.read(1).astype(np.float64)
            r0 = round((spec.y0 - src.transform.f) / spec.res_y)
            c0 = round((src.transform.c - spec.x0) / spec.res_x)
        got = ds[band][0].values[r0:r0 + dn.shape[0], c0:c0 + dn.shape[1]]
        expect = np.where(dn == 0, np.nan, dn * 1e-4 + offset)
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-6, equal_nan=True, err_msg=band)
    # the same asset as a named layer keeps the declared scale and offset as its attributes
    named = str(tmp_path / "named.zarr")
    pz.ingest([str(stac)], named, band="red", bands=["B04"], quiet=True)
    info = pz.open_store(named).grids["utm16n/10m"].bands["red"]
    assert (info["scale_factor"], info["add_offset"]) == (0.0001, 0.0)
