"""Sources beyond Sentinel-2 file names: named layers in other CRSs (synthetic WorldCover and
CDL, real CORINE, a 10-band S2 stack, a 68-date NDVI stack, a geographic S2 subset), STAC
ItemCollections with local and ``az://`` assets, processing-baseline offsets, validation
before anything is written, and Dask distributed.

Stored pixels are compared with rasterio reads of the sources (the real files are read from
``../shared/data``; see its README for licences).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

import parcelzarr as pz
from parcelzarr.errors import IngestConflictError, InvalidSourceError

from ._rasters import SHARED_DATA, scene_data, write_tif
from .test_ingest_tiles import object_stamps

DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared real data not available")


def assert_stored_equals(url: str, grid: str, band: str, t: int, path: Path, bidx: int = 1,
                         opts: Any = None) -> None:
    """The stored band at time index ``t`` equals band ``bidx`` of ``path`` where it lies."""
    store = pz.open_store(url, storage_options=opts)
    arr = store._array(grid, band)
    spec = store.grids[grid].spec
    with rasterio.open(path) as src:
        expect = src.read(bidx)
        c0 = round((src.transform.c - spec.x0) / spec.res_x)
        r0 = round((spec.y0 - src.transform.f) / spec.res_y)
    got = np.asarray(arr[t, r0:r0 + expect.shape[0], c0:c0 + expect.shape[1]])
    assert got.dtype == expect.dtype
    np.testing.assert_array_equal(got, expect)


def test_named_layers_synthetic_worldcover_and_cdl(tmp_path: Path,
                                                   store_url: tuple[str, Any]) -> None:
    url, opts = store_url
    rng = np.random.default_rng(0)
    classes = np.array([10, 20, 30, 40, 50, 60, 80, 90, 95, 100], dtype="uint8")
    wc = write_tif(tmp_path / "ESA_WorldCover_10m_2021_N39W089_Map.tif",
                   classes[rng.integers(0, 10, (360, 420))], origin=(-88.5, 40.1),
                   res=1 / 12000, crs="EPSG:4326", nodata=0)
    cdl = write_tif(tmp_path / "CDL_2023_clip.tif",
                    rng.choice(np.array([1, 5, 24, 36, 61, 176], "uint8"), (300, 340)),
                    origin=(600_015.0, 1_950_045.0), res=30.0, crs="EPSG:5070", nodata=0)
    pz.ingest([str(wc)], url, band="worldcover", time="2021-01-01", storage_options=opts,
              quiet=True)
    pz.ingest([str(cdl)], url, band="cdl", time="2023-01-01", storage_options=opts, quiet=True)
    store = pz.open_store(url, storage_options=opts)
    assert set(store.grids) == {"epsg4326/0p3arcsec", "epsg5070/30m"}
    assert_stored_equals(url, "epsg4326/0p3arcsec", "worldcover", 0, wc, opts=opts)
    assert_stored_equals(url, "epsg5070/30m", "cdl", 0, cdl, opts=opts)


@needs_data
def test_real_layers(tmp_path: Path) -> None:
    url = str(tmp_path / "real.zarr")
    corine = DATA / "sao-miguel" / "clc2018_v2020_20u1.tif"
    pz.ingest([str(corine)], url, band="corine", time="2018-01-01", quiet=True)
    assert_stored_equals(url, "epsg4326/0p75arcsec", "corine", 0, corine)

    aber = DATA / "rsgislib-aber" / "sen2_20210527_aber_rebuilt.tif"
    report = pz.ingest([str(aber)], url, band="s2", time="2021-05-27", quiet=True)
    assert report.sources_written == 10
    for i in (1, 4, 10):
        assert_stored_equals(url, "epsg27700/10m", f"s2_{i}", 0, aber, bidx=i)

    ndvi = DATA / "eo-learn-slovenia" / "NDVI_68dates.tif"
    times = json.loads((DATA / "eo-learn-slovenia" / "timestamps.json").read_text())
    pz.ingest([str(ndvi)], url, band="ndvi", times=times, quiet=True)
    store = pz.open_store(url)
    grid = next(g for g in store.grids if g.startswith("utm33n"))
    assert len(store.grids[grid].times) == 68
    assert str(store.grids[grid].times[5]) == times[5]
    arr = store._array(grid, "ndvi")
    spec = store.grids[grid].spec
    with rasterio.open(ndvi) as src:
        c0 = round((src.transform.c - spec.x0) / spec.res_x)
        r0 = round((spec.y0 - src.transform.f) / spec.res_y)
        for t in (0, 33, 67):
            np.testing.assert_array_equal(
                np.asarray(arr[t, r0:r0 + src.height, c0:c0 + src.width]), src.read(t + 1))

    lux = DATA / "terra-lux" / "sent2_L2A_2024-08-24.tif"
    pz.ingest([str(lux)], url, band="lux", time="2024-08-24", quiet=True)
    store = pz.open_store(url)
    grid = next(g for g in store.grids if g.startswith("epsg4326/30arcsec"))
    assert {"B02", "B03", "B04", "B08"} <= set(store.grids[grid].bands)
    assert_stored_equals(url, grid, "B08", 0, lux, bidx=4)


def test_stac_itemcollection_local_and_az_assets(tmp_path: Path, azurite: Any,
                                                 az_container: str) -> None:
    opts = azurite.storage_options()
    fs = fsspec.filesystem("az", skip_instance_cache=True, **opts)
    items = []
    files = {}
    for k, day in enumerate(("2024-06-15", "2024-06-20")):
        b04 = write_tif(tmp_path / f"b04_{k}.tif", scene_data((300, 300), seed=k))
        b08 = write_tif(tmp_path / f"b08_{k}.tif", scene_data((300, 300), seed=10 + k))
        fs.put_file(str(b08), f"{az_container}/items/{k}/B08.tif")
        files[(day, "B04")], files[(day, "B08")] = b04, b08
        items.append({
            "type": "Feature", "id": f"S2A_MSIL2A_{day}_T16TCK", "stac_version": "1.0.0",
            "properties": {"datetime": f"{day}T16:58:49Z", "s2:mgrs_tile": "16TCK",
                           "s2:processing_baseline": "05.10"},
            "assets": {"B04": {"href": b04.name}, "B08": {
                "href": f"az://{az_container}/items/{k}/B08.tif"},
                "visual": {"href": "nowhere.tif"}},
            "geometry": None, "links": [],
        })
    stac = tmp_path / "items.json"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    url = str(tmp_path / "stac.zarr")
    report = pz.ingest([str(stac)], url, source_storage_options=opts, quiet=True)
    assert report.sources_written == 4
    store = pz.open_store(url)
    assert store.bands == ["B04", "B08"]
    assert [str(t)[:10] for t in store.grids["utm16n/10m"].times] == ["2024-06-15",
                                                                     "2024-06-20"]
    for t, day in enumerate(("2024-06-15", "2024-06-20")):
        for band in ("B04", "B08"):
            assert_stored_equals(url, "utm16n/10m", band, t, files[(day, band)])
    manifest = json.loads((Path(url) / "parcelzarr-manifest.json").read_text())
    assert any("T16TCK" in k for k in manifest["sources"])
    # bands= filters STAC assets too; re-running is a no-op
    assert pz.ingest([str(stac)], url, bands=["B04"], source_storage_options=opts,
                     quiet=True).sources_written == 0


def test_processing_baseline_offsets_per_date(tmp_path: Path) -> None:
    old = write_tif(tmp_path / "T16TBK_20210601T100000_B04_10m.tif", scene_data((200, 200), 1))
    new = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif", scene_data((200, 200), 2))
    url = str(tmp_path / "boa.zarr")
    pz.ingest([str(old), str(new)], url, quiet=True)
    ds = xr.open_zarr(url, group="utm16n/10m", mask_and_scale=True)
    store = pz.open_store(url)
    spec = store.grids["utm16n/10m"].spec
    for t, (path, offset) in enumerate(((old, 0), (new, -1000))):
        with rasterio.open(path) as src:
            dn = src.read(1).astype(float)
            c0 = round((src.transform.c - spec.x0) / 10)
            r0 = round((spec.y0 - src.transform.f) / 10)
        refl = ds.B04[t].values[r0:r0 + 200, c0:c0 + 200]
        expect = np.where(dn == 0, np.nan, (dn + offset) / 10_000)
        np.testing.assert_allclose(refl, expect, rtol=0, atol=1e-6)


def _bad_sources(tmp: Path) -> dict[str, tuple[list[Path], type[Exception]]]:
    good = write_tif(tmp / "T16TBK_20240601T100000_B04_10m.tif", scene_data((200, 200), 1))
    wrong_res = tmp / "res" / "T16TBK_20240611T100000_B04_10m.tif"
    wrong_res.parent.mkdir()
    write_tif(wrong_res, scene_data((100, 100), 1), res=20.0)
    no_geo = tmp / "nogeo" / "T16TBK_20240611T100000_B04_10m.tif"
    no_geo.parent.mkdir()
    with rasterio.open(no_geo, "w", driver="GTiff", width=50, height=50, count=1,
                       dtype="uint16") as ds:
        ds.write(np.ones((1, 50, 50), "uint16"))
    twin = tmp / "twin" / good.name
    twin.parent.mkdir()
    write_tif(twin, scene_data((200, 200), 9))
    other_crs = tmp / "crs" / good.name
    other_crs.parent.mkdir()
    write_tif(other_crs, scene_data((200, 200), 1), crs="EPSG:32617")
    truncated = tmp / "trunc" / "T16TBK_20240621T100000_B04_10m.tif"
    truncated.parent.mkdir()
    write_tif(truncated, scene_data((600, 600), 3), block=64)
    size = truncated.stat().st_size
    with truncated.open("r+b") as f:
        f.truncate(size * 2 // 3)
    float_band = tmp / "float" / "T16TBK_20240701T100000_B04_10m.tif"
    float_band.parent.mkdir()
    write_tif(float_band, scene_data((200, 200), 1).astype("float32"))
    return {
        "resolution": ([wrong_res], IngestConflictError),
        "not georeferenced": ([no_geo], InvalidSourceError),
        "same tile/band/date twice": ([good, twin], IngestConflictError),
        "same tile/band/date in another CRS": ([good, other_crs], IngestConflictError),
        "truncated": ([truncated], InvalidSourceError),
        "dtype differs from the store": ([float_band], IngestConflictError),
        "changed file for an ingested tile/band/date": ([twin], IngestConflictError),
    }


def test_validation_before_anything_is_written(tmp_path: Path,
                                               store_url: tuple[str, Any]) -> None:
    url, opts = store_url
    cases = _bad_sources(tmp_path)
    pz.ingest([str(tmp_path / "T16TBK_20240601T100000_B04_10m.tif")], url,
              storage_options=opts, quiet=True)
    stamps = object_stamps(url, opts)
    for what, (paths, error) in cases.items():
        with pytest.raises(error) as info:
            pz.ingest([str(p) for p in paths], url, storage_options=opts, quiet=True)
        assert str(info.value), what
        assert object_stamps(url, opts) == stamps, what


def test_dask_distributed_matches_threads(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    files = [write_tif(tmp_path / f"T16TBK_2024060{d}T100000_{b}_10m.tif",
                       scene_data((300, 300), seed=d * 10 + i), block=64)
             for d in (1, 2) for i, b in enumerate(("B04", "B08"))]
    threads, dask_url = str(tmp_path / "threads.zarr"), str(tmp_path / "dask.zarr")
    pz.ingest([str(p) for p in files], threads, quiet=True, chunk_size=64, workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        report = pz.ingest([str(p) for p in files], dask_url, quiet=True, chunk_size=64,
                           scheduler=cluster.scheduler_address)
    assert report.sources_written == 4
    for band in ("B04", "B08"):
        a = zarr.open_array(threads, path=f"utm16n/10m/{band}", mode="r")[:]
        b = zarr.open_array(dask_url, path=f"utm16n/10m/{band}", mode="r")[:]
        np.testing.assert_array_equal(a, b)
    shutil.rmtree(dask_url)


@needs_data
def test_cli_time_from_bands_compact_info(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parcelzarr.cli import main

    url = str(tmp_path / "cli.zarr")
    ndvi = DATA / "eo-learn-slovenia" / "NDVI_68dates.tif"
    stamps = DATA / "eo-learn-slovenia" / "timestamps.json"
    runner = CliRunner()
    out = runner.invoke(main, ["ingest", str(ndvi), "--store", url, "--band", "ndvi",
                               "--time-from-bands", str(stamps), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "wrote 68 source(s)" in out.output
    out = runner.invoke(main, ["compact", url, "--time-chunk", "68", "--quiet"])
    assert out.exit_code == 0, out.output
    assert "compacted 1 array" in out.output
    out = runner.invoke(main, ["info", url])
    assert "objects 68x256x256" in out.output
    assert "dates (68)" in out.output
    out = runner.invoke(main, ["ingest", str(ndvi), "--store", url, "--band", "ndvi",
                               "--time-from-bands", str(stamps), "--quiet"])
    assert "nothing to do" in out.output
    three = tmp_path / "three.json"
    three.write_text(json.dumps(["2020-01-01", "2020-02-01", "2020-03-01"]))
    bad = runner.invoke(main, ["ingest", str(ndvi), "--store", str(tmp_path / "x.zarr"),
                               "--band", "ndvi", "--time-from-bands", str(three)])
    assert bad.exit_code == 2
    assert "has 68 band(s) but 3 date(s)" in bad.output
    assert not (tmp_path / "x.zarr").exists()


def test_az_glob_sources_into_azure_store(tmp_path: Path, azurite: Any,
                                          az_container: str) -> None:
    opts = azurite.storage_options()
    fs = fsspec.filesystem("az", skip_instance_cache=True, **opts)
    paths = [write_tif(tmp_path / f"T16TBK_2024060{d}T100000_B04_10m.tif",
                       scene_data((200, 200), d)) for d in (1, 2)]
    for p in paths:
        fs.put_file(str(p), f"{az_container}/src/{p.name}")
    url = f"az://{az_container}/store.zarr"
    report = pz.ingest([f"az://{az_container}/src/*_B04_10m.tif"], url, storage_options=opts,
                       quiet=True)
    assert report.sources_written == 2
    for t, p in enumerate(paths):
        assert_stored_equals(url, "utm16n/10m", "B04", t, p, opts=opts)
