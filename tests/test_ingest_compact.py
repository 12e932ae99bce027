"""Time-series layout: a parcel's 20-date season before and after ``compact``.

Requests are counted by the latency proxy in front of Azurite (every HTTP request the store
makes), bytes by the store's I/O counters. Values are checked against rasterio reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr

import parcelzarr as pz
from parcelzarr.testing import Azurite, LatencyProxy

from ._rasters import scene_data, write_tif

ORIGIN = (300_000.0, 4_500_000.0)
N_DATES = 20
SIZE = 256


def _date(i: int) -> str:
    return (np.datetime64("2024-04-01") + np.timedelta64(7 * i, "D")).astype(str).replace(
        "-", "") + "T100000"


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("season")
    return [write_tif(folder / f"T16TBK_{_date(i)}_B04_10m.tif",
                      scene_data((SIZE, SIZE), seed=i), origin=ORIGIN, block=64)
            for i in range(N_DATES + 1)]


PARCEL = shapely.box(ORIGIN[0] + 300, ORIGIN[1] - 900, ORIGIN[0] + 700, ORIGIN[1] - 500)


def _read(url: str, opts: Any, proxy: LatencyProxy) -> tuple[xr.Dataset, int, int]:
    store = pz.open_store(url, storage_options=opts)
    proxy.reset_counters()
    before = store._handle.counters.snapshot().bytes_read
    ds = store.read(PARCEL, bands=["B04"], crs="EPSG:32616")
    return ds, proxy.requests, store._handle.counters.snapshot().bytes_read - before


def _source_window(path: Path, ds: xr.Dataset) -> np.ndarray:
    with rasterio.open(path) as src:
        r0 = round((src.bounds.top - (float(ds.y[0]) + 5)) / 10)
        c0 = round(((float(ds.x[0]) - 5) - src.bounds.left) / 10)
        return src.read(1)[r0:r0 + ds.sizes["y"], c0:c0 + ds.sizes["x"]]


def test_season_requests_before_and_after_compaction(
    season: list[Path], azurite: Azurite, az_container: str, proxy: LatencyProxy
) -> None:
    url = f"az://{az_container}/season.zarr"
    opts = azurite.storage_options(proxy.endpoint)
    pz.ingest([str(p) for p in season[:N_DATES]], url, storage_options=opts, quiet=True,
              chunk_size=128)
    before, req_before, bytes_before = _read(url, opts, proxy)
    assert before.sizes["time"] == N_DATES

    report = pz.compact(url, storage_options=opts, quiet=True)
    assert report.objects_after < report.objects_before
    after, req_after, bytes_after = _read(url, opts, proxy)
    xr.testing.assert_identical(before, after)
    # The parcel touches 1 spatial chunk: 20 chunk requests before, 1 after (plus the root
    # GET that checks the version at the end of each call, docs/snapshots.md).
    assert req_before >= N_DATES
    assert req_after <= 3
    print(f"\nseason of {N_DATES} dates, one parcel, one band: {req_before} requests / "
          f"{bytes_before} B before compaction; {req_after} requests / {bytes_after} B after")

    # Appends keep working after compaction, and re-running either step is a no-op.
    appended = pz.ingest([str(p) for p in season], url, storage_options=opts, quiet=True)
    assert appended.sources_written == 1
    ds, _, _ = _read(url, opts, proxy)
    assert ds.sizes["time"] == N_DATES + 1
    inside = ds["inside"].values
    for t in (0, N_DATES - 1, N_DATES):
        expect = np.where(inside, _source_window(season[t], ds), 0)
        np.testing.assert_array_equal(ds.B04[t].values, expect)
    assert str(pz.compact(url, storage_options=opts, quiet=True)).endswith("nothing to compact")
    assert pz.ingest([str(p) for p in season], url, storage_options=opts,
                     quiet=True).sources_written == 0


def test_compaction_killed_and_rerun(season: list[Path], tmp_path: Path) -> None:
    url = str(tmp_path / "season.zarr")
    pz.ingest([str(p) for p in season[:N_DATES]], url, quiet=True, chunk_size=64)
    expect = xr.open_zarr(url, group="utm16n/10m", mask_and_scale=False).B04.values
    cmd = [sys.executable, "-m", "parcelzarr.cli", "compact", url, "--workers", "1", "--quiet"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # One real kill -9, the moment the first compacted object appears; every write boundary
    # of a compaction is crashed deterministically in test_ingest_faults.py.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and not any(".0." in f or "c/0/" in f for f in _new_files(url)):
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    got = xr.open_zarr(url, group="utm16n/10m", mask_and_scale=False).B04.values
    np.testing.assert_array_equal(got, expect)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    arr = pz.open_store(url)._array("utm16n/10m", "B04")
    assert arr.chunks[0] == 32
    np.testing.assert_array_equal(
        xr.open_zarr(url, group="utm16n/10m", mask_and_scale=False).B04.values, expect)


def _new_files(url: str) -> list[str]:
    band = Path(url) / "utm16n" / "10m" / "B04"
    try:  # the compaction creates and deletes files while we look
        return [p.name for p in band.iterdir()] + [
            str(p.relative_to(band)) for p in (band / "c").rglob("*")] if band.exists() else []
    except FileNotFoundError:
        return []


def test_info_lists_tiles_chunking_and_sizes(season: list[Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parcelzarr.cli import main

    url = str(tmp_path / "info.zarr")
    pz.ingest([str(p) for p in season[:3]], url, quiet=True, chunk_size=128)
    info = pz.open_store(url).info()
    grid = info["grids"]["utm16n/10m"]
    assert grid["tiles"] == ["T16TBK"]
    assert grid["bands"]["B04"]["object_shape"] == [1, 128, 128]
    chunk_files = [p for p in (Path(url) / "utm16n/10m/B04").rglob("*")
                   if p.is_file() and p.name != "zarr.json"]  # data objects, not metadata
    assert grid["bands"]["B04"]["objects"] == len(chunk_files)
    assert grid["bands"]["B04"]["stored_bytes"] == sum(p.stat().st_size for p in chunk_files)
    out = CliRunner().invoke(main, ["info", url])
    assert out.exit_code == 0, out.output
    assert "tiles (1): T16TBK" in out.output
    assert "objects 1x128x128" in out.output
