"""SIGKILL a real ingest process in the middle of growing the grid; committed dates always
read correctly and re-running the same command completes it.

Every write boundary of ingest, growth, new grids and compaction is crashed deterministically
in test_ingest_faults.py; this test keeps one real ``kill -9`` per transport. The command
appends three dates of two overlapping tiles, one of which makes the grid grow west and
north (a relayout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import rasterio
import xarray as xr

import parcelzarr as pz

from ._rasters import scene_data, write_tif
from .test_ingest_tiles import object_stamps

DATES = ("20240601T100000", "20240611T100000", "20240621T100000", "20240701T100000")
TILES = {"T16TBK": (300_000.0, 4_500_000.0), "T16TCK": (297_000.0, 4_501_500.0)}
SIZE = 400


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("crash")
    out = {}
    for k, (tile, origin) in enumerate(TILES.items()):
        for d, date in enumerate(DATES):
            out[(tile, date)] = write_tif(folder / f"{tile}_{date}_B04_10m.tif",
                                          scene_data((SIZE, SIZE), seed=10 * k + d),
                                          origin=origin, block=64)
    return out


def _expected(ds: xr.Dataset, paths: list[Path]) -> np.ndarray:
    x, y = ds.x.values, ds.y.values
    canvas = np.zeros((y.size, x.size), dtype="uint16")
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            c0 = round((src.bounds.left - (x[0] - 5)) / 10)
            r0 = round(((y[0] + 5) - src.bounds.top) / 10)
        view = canvas[r0:r0 + SIZE, c0:c0 + SIZE]
        take = (view == 0) & (data != 0)
        view[take] = data[take]
    return canvas


def check_committed(url: str, opts: Any, files: dict[tuple[str, str], Path]) -> int | None:
    """Verify every committed date; returns how many there are (None: store changed while
    reading, a stale view — the observation is discarded)."""
    try:
        store = pz.open_store(url, storage_options=opts)
    except pz.errors.StoreNotFoundError:
        return 0
    spec = store.grids["utm16n/10m"].spec
    ds = xr.open_zarr(store._handle.store, group="utm16n/10m", mask_and_scale=False)
    got = ds.B04.values
    times = [str(t.astype("datetime64[s]")).replace("-", "").replace(":", "")
             for t in ds.time.values]
    again = pz.open_store(url, storage_options=opts).grids["utm16n/10m"].spec
    if again != spec:
        return None
    for i, t in enumerate(times):
        tiles = ["T16TBK"] if t == DATES[0] else ["T16TBK", "T16TCK"]
        expect = _expected(ds, [files[(tile, t)] for tile in tiles])
        np.testing.assert_array_equal(got[i], expect, err_msg=f"date {t}")
    return len(times)


def _command(url: str, opts: Any, paths: list[Path]) -> list[str]:
    cmd = [sys.executable, "-m", "parcelzarr.cli", "ingest", *map(str, paths), "--store", url,
           "--workers", "1", "--chunk", "64", "--quiet"]
    for k, v in (opts or {}).items():
        cmd += ["--storage-option", f"{k}={v}"]
    return cmd


def _exists(url: str, opts: Any, key: str) -> bool:
    if url.startswith("az://"):
        fs = fsspec.filesystem("az", skip_instance_cache=True, use_listings_cache=False,
                               **(opts or {}))
        return bool(fs.exists(f"{url[5:]}/{key}"))
    return os.path.exists(os.path.join(url, key))


def test_sigkill_when_the_relayout_journal_appears(files: dict[tuple[str, str], Path],
                                                   store_url: tuple[str, Any]) -> None:
    """The issue's reproduction: ``kill -9`` an ingest that grows the grid west and north the
    moment ``parcelzarr-relayout.json`` appears, then re-run it. Nothing committed may be
    lost: the first tile keeps every pixel, through the re-run and a later compaction."""
    url, opts = store_url
    pz.ingest([str(files[("T16TBK", DATES[0])])], url, storage_options=opts, quiet=True,
              chunk_size=64)
    assert check_committed(url, opts, files) == 1
    cmd = _command(url, opts, [files[(t, d)] for t in TILES for d in DATES[1:]])
    # the shortest Azure lease: a killed writer's lock expires within 15 s
    env = dict(os.environ, PYTHONWARNINGS="ignore", PARCELZARR_LOCK_LEASE="15")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while proc.poll() is None and not _exists(url, opts, "parcelzarr-relayout.json"):
        assert time.monotonic() - t0 < 120, "the ingest never started growing the grid"
        time.sleep(0.001 if not url.startswith("az://") else 0.01)
    assert proc.poll() is None, "the ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a reader right after the kill: the first date, intact
    assert check_committed(url, opts, files) == 1
    # The killed writer's lock: released at once (local), or when its lease expires (Azure).
    killed = time.monotonic()
    done = subprocess.run([*cmd, "--wait", "60"], env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    print(f"re-run finished {time.monotonic() - killed:.1f} s after the kill")
    assert "wrote 6 source(s)" in done.stdout
    assert check_committed(url, opts, files) == 4
    stamps = object_stamps(url, opts)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "nothing to do" in again.stdout
    assert object_stamps(url, opts) == stamps
    pz.compact(url, storage_options=opts, quiet=True, time_chunk=2)
    assert check_committed(url, opts, files) == 4


@pytest.mark.parametrize("compacted", [False, True])
def test_uncommitted_slot_never_surfaces_with_junk(tmp_path: Path, compacted: bool) -> None:
    """What a killed append leaves (a live-only date full of junk) is cleared by the next run,
    even when that run writes a different, smaller date into the same time slot."""
    big = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif",
                    scene_data((SIZE, SIZE), 1), origin=TILES["T16TBK"], block=64)
    small = write_tif(tmp_path / "T16TBK_20240611T100000_B04_10m.tif",
                      scene_data((100, 100), 2) | 1, origin=TILES["T16TBK"], block=64)
    url = str(tmp_path / "junk.zarr")
    pz.ingest([str(big)], url, quiet=True, chunk_size=64)
    if compacted:
        pz.compact(url, time_chunk=4, quiet=True)
    # emulate a run killed after writing a new date but before its commit
    import zarr

    root = zarr.open_group(url, mode="a", use_consolidated=False)
    arr, tarr = root["utm16n/10m/B04"], root["utm16n/10m/time"]
    arr.resize((2, *arr.shape[1:]))
    arr[1] = 7
    tarr.resize((2,))
    tarr[1] = 1_700_000_000
    assert check_committed_times(url) == 1

    report = pz.ingest([str(small)], url, quiet=True)
    assert "cleared 1 uncommitted date(s) of utm16n/10m/B04" in report.recovered
    ds = xr.open_zarr(url, group="utm16n/10m", mask_and_scale=False)
    assert ds.sizes["time"] == 2
    assert str(ds.time.values[1])[:10] == "2024-06-11"
    got = ds.B04[1].values
    with rasterio.open(small) as src:
        c0 = round((src.bounds.left - (float(ds.x[0]) - 5)) / 10)
        r0 = round(((float(ds.y[0]) + 5) - src.bounds.top) / 10)
        np.testing.assert_array_equal(got[r0:r0 + 100, c0:c0 + 100], src.read(1))
    got[r0:r0 + 100, c0:c0 + 100] = 0
    assert not got.any()  # no junk outside the new date's footprint
    np.testing.assert_array_equal(ds.B04[0].values,
                                  _expected(ds, [big]))


def check_committed_times(url: str) -> int:
    return len(pz.open_store(url).grids["utm16n/10m"].times)
