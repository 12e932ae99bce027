"""Readers polling while writers ingest, append to a date, grow the grid and compact it.

Every polled answer must be the statistics of one committed state, whole: the oracle builds
each state's per-date mosaic from the source GeoTIFFs with rasterio and numpy (first valid
pixel wins, in ingest order) and reduces each parcel's pixels with numpy. A mix of two
states, or a count 0 / NaN for a date committed before, fails the test. Before snapshot
isolation a handle kept open across the growth read count 0 for the first date (its objects
were deleted under it), and queries in flight during a swap did too.

Writers run as real ``parcelzarr`` processes with ``PARCELZARR_SNAPSHOT_GRACE=0`` (the
superseded objects are deleted right after each commit: the hardest case for readers).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from shapely.geometry import box

import parcelzarr as pz

from ._rasters import scene_data, write_tif

RES = 10.0
SIZE = 256
A_ORIGIN = (300_000.0, 4_500_000.0)
W_ORIGIN = (299_000.0, 4_501_000.0)  # west and north of A: growth shifts the chunk keys
CANVAS = (W_ORIGIN[0], W_ORIGIN[1], 356, 356)  # x0, y0, width, height (px): covers both
D0, D1, D2 = "20240601T100000", "20240611T100000", "20240621T100000"
#: Parcels (pixel-edge aligned boxes): left half of A, right half (nodata in A's first date
#: until a second tile fills it), across both halves, and across A's NW corner into W.
PARCELS = {
    "left": (300_100.0, 4_499_000.0, 300_500.0, 4_499_500.0),
    "right": (301_500.0, 4_498_000.0, 302_000.0, 4_498_600.0),
    "middle": (300_800.0, 4_497_600.0, 301_600.0, 4_498_200.0),
    "corner": (299_900.0, 4_499_800.0, 300_300.0, 4_500_200.0),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("snapshot_sources")
    half = scene_data((SIZE, SIZE), seed=1)
    half[:, SIZE // 2:] = 0  # the first tile of D0 leaves its right half nodata
    return {
        "A@D0": write_tif(folder / f"T16TBK_{D0}_B04_10m.tif", half, origin=A_ORIGIN, block=64),
        "A@D1": write_tif(folder / f"T16TBK_{D1}_B04_10m.tif", scene_data((SIZE, SIZE), 2),
                          origin=A_ORIGIN, block=64),
        "B@D0": write_tif(folder / f"T16TBL_{D0}_B04_10m.tif", scene_data((SIZE, SIZE), 3),
                          origin=A_ORIGIN, block=64),
        "W@D1": write_tif(folder / f"T16TCK_{D1}_B04_10m.tif", scene_data((SIZE, SIZE), 4),
                          origin=W_ORIGIN, block=64),
        "W@D2": write_tif(folder / f"T16TCK_{D2}_B04_10m.tif", scene_data((SIZE, SIZE), 5),
                          origin=W_ORIGIN, block=64),
    }


def _mosaic(paths: list[Path]) -> np.ndarray:
    """One date's pixels on the canvas, first valid pixel wins (rasterio reads)."""
    x0, y0, width, height = CANVAS
    canvas = np.zeros((height, width), dtype="uint16")
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            c = round((src.bounds.left - x0) / RES)
            r = round((y0 - src.bounds.top) / RES)
        view = canvas[r:r + data.shape[0], c:c + data.shape[1]]
        take = (view == 0) & (data != 0)
        view[take] = data[take]
    return canvas


def _expected(state: dict[str, list[Path]]) -> dict[tuple[str, str], tuple[int, float]]:
    """``(parcel, date) -> (count, sum)`` of a committed state, by numpy on the mosaics."""
    x0, y0, _, _ = CANVAS
    out = {}
    for date, paths in state.items():
        canvas = _mosaic(paths)
        for pid, (minx, miny, maxx, maxy) in PARCELS.items():
            window = canvas[round((y0 - maxy) / RES):round((y0 - miny) / RES),
                            round((minx - x0) / RES):round((maxx - x0) / RES)]
            valid = window[window != 0].astype("float64")
            out[(pid, date)] = (int(valid.size), float(valid.sum()))
    return out


def _observed(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[int, float]]:
    out = {}
    for row in frame.itertuples():
        date = pd.Timestamp(row.time).strftime("%Y%m%dT%H%M%S")
        total = 0.0 if row.count == 0 else float(row.sum)
        out[(str(row.parcel_id), date)] = (int(row.count), total)
    return out


def _cli(url: str, opts: dict[str, Any] | None, *args: str) -> None:
    cmd = [sys.executable, "-m", "parcelzarr.cli", *args, url if args[0] == "compact" else ""]
    cmd = [c for c in cmd if c]
    if args[0] == "ingest":
        cmd += ["--store", url, "--workers", "1", "--chunk", "64", "--quiet"]
    for k, v in (opts or {}).items():
        cmd += ["--storage-option", f"{k}={v}"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PARCELZARR_SNAPSHOT_GRACE="0")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_readers_see_one_committed_version_through_every_swap(
        sources: dict[str, Path], store_url: tuple[str, Any]) -> None:
    """Two readers poll ``zonal_stats`` (a handle opened before the first change and kept,
    and a fresh handle per poll) while five writers run one after the other. Every answer
    equals the oracle of one committed state."""
    url, opts = store_url
    s = sources
    states = [
        {D0: [s["A@D0"]]},
        {D0: [s["A@D0"]], D1: [s["A@D1"]]},                             # ingest of a date
        {D0: [s["A@D0"], s["B@D0"]], D1: [s["A@D1"]]},                  # append to a date
        {D0: [s["A@D0"], s["B@D0"]], D1: [s["A@D1"], s["W@D1"]],        # growth W and N
         D2: [s["W@D2"]]},
    ]
    writers = [
        ("ingest", ("ingest", str(s["A@D1"]))),
        ("append to date", ("ingest", str(s["B@D0"]))),
        ("growth", ("ingest", str(s["W@D1"]), str(s["W@D2"]))),
        ("compaction", ("compact", "--time-chunk", "2", "--quiet")),
    ]
    expected = [_expected(st) for st in states]
    # the oracle tells the states apart: each writer changes some parcel's answer
    assert all(a != b for a, b in itertools.pairwise(expected))
    parcels = gpd.GeoDataFrame({"parcel_id": list(PARCELS)},
                               geometry=[box(*b) for b in PARCELS.values()], crs="EPSG:32616")
    _cli(url, opts, "ingest", str(s["A@D0"]))
    kept = pz.open_store(url, storage_options=opts)
    phase = ["before"]
    polls: list[tuple[str, str, dict[tuple[str, str], tuple[int, float]]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll(name: str) -> None:
        try:
            while not stop.is_set():
                at = phase[0]
                store = kept if name == "kept" else pz.open_store(url, storage_options=opts)
                frame = store.zonal_stats(parcels, bands=["B04"], stats=["count", "sum"],
                                          id_column="parcel_id")
                polls.append((name, at, _observed(frame)))
                if name != "kept":
                    store.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(n,)) for n in ("kept", "fresh")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for name, args in writers:
            phase[0] = name
            _cli(url, opts, *args)
        phase[0] = "after"
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        kept.close()
    assert not errors, errors
    wrong = []
    seen: dict[tuple[str, str], int] = {}
    for reader, at, got in polls:
        seen[(reader, at)] = seen.get((reader, at), 0) + 1
        if not any(got == exp for exp in expected):
            diff = {k: (v, [e.get(k) for e in expected]) for k, v in got.items()
                    if all(e.get(k) != v for e in expected)}
            wrong.append((reader, at, dict(list(diff.items())[:3])))
    assert not wrong, f"{len(wrong)} of {len(polls)} polls match no committed state: {wrong[:3]}"
    for reader in ("kept", "fresh"):
        for name, _ in writers:  # the readers did read while each writer ran
            assert seen.get((reader, name), 0) >= 1, (reader, name, seen)
    # and after everything, the final state (compacted) equals the oracle
    with pz.open_store(url, storage_options=opts) as fresh:
        after = _observed(fresh.zonal_stats(parcels, bands=["B04"], stats=["count", "sum"],
                                            id_column="parcel_id"))
    assert after == expected[-1]
    print(dict(sorted(seen.items())))
