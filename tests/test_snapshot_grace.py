"""Superseded objects outlive their commit by the grace period; a query in flight over a swap
is run again on the new version; a writer rewriting committed dates in place makes queries
wait, then fail clearly, never answer with a mix.

Values are checked against rasterio reads of the source GeoTIFFs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import zarr
from parcelzarr._ingest._retire import mark_in_place
from parcelzarr.stores import open_store_handle

import parcelzarr as pz
from parcelzarr.errors import InvalidSourceError, StoreChangedError

from ._rasters import scene_data, write_tif
from .test_ingest_growth import _corrupt_middle_block

ORIGIN = (300_000.0, 4_500_000.0)
SIZE = 192
DATES = ("20240601T100000", "20240611T100000", "20240621T100000")
PARCEL = shapely.box(ORIGIN[0] + 300, ORIGIN[1] - 900, ORIGIN[0] + 1100, ORIGIN[1] - 500)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("grace")
    return [write_tif(folder / f"T16TBK_{d}_B04_10m.tif", scene_data((SIZE, SIZE), seed=i),
                      origin=ORIGIN, block=64) for i, d in enumerate(DATES)]


def _source(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _offset(root: zarr.Group) -> tuple[int, int]:
    """Row and column of the sources' top-left pixel in the grid (from its coordinates)."""
    x = np.asarray(root["utm16n/10m/x"][:])
    y = np.asarray(root["utm16n/10m/y"][:])
    return round((y[0] + 5 - ORIGIN[1]) / 10), round((ORIGIN[0] + 5 - x[0]) / 10)


def _in_grid(plane: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    return plane[at[0]:at[0] + SIZE, at[1]:at[1] + SIZE]


def _keys(store: Path, array: str, sep: str) -> list[str]:
    folder = store / array
    if sep == ".":
        return sorted(p.name for p in folder.glob("c.*"))
    return sorted(str(p.relative_to(folder)) for p in folder.glob("c/**/*") if p.is_file())


def test_superseded_objects_outlive_the_commit_by_the_grace(
        tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader holding the metadata of the version before a compaction still reads every
    pixel during the grace period; the first writer after it deletes the old objects."""
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_GRACE", "3600")
    url = tmp_path / "store.zarr"
    pz.ingest([str(f) for f in files[:2]], str(url), chunk_size=64, quiet=True)
    old_root = zarr.open_group(str(url), mode="r", use_consolidated=True)
    old = old_root["utm16n/10m/B04"]
    assert isinstance(old, zarr.Array)
    old_sep = "/" if old.metadata.chunk_key_encoding.separator == "/" else "."
    pz.compact(str(url), time_chunk=4, quiet=True)
    # the old version's objects are still there, and read exactly through its metadata
    assert _keys(url, "utm16n/10m/B04", old_sep)
    at = _offset(old_root)
    for i in range(2):
        np.testing.assert_array_equal(_in_grid(old[i], at), _source(files[i]))
    record = (url / "parcelzarr-retired.json").read_text()
    assert "utm16n/10m/B04" in record
    # a writer within the grace leaves them; one after it deletes them
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_GRACE", "0.5")
    time.sleep(0.6)
    pz.ingest([str(files[2])], str(url), chunk_size=64, quiet=True)
    assert not _keys(url, "utm16n/10m/B04", old_sep)
    assert not (url / "parcelzarr-retired.json").exists()
    with pz.open_store(str(url)) as store:
        ds = store.read(PARCEL, bands=["B04"], crs="EPSG:32616")
        assert ds.sizes["time"] == 3
        root = zarr.open_group(str(url), mode="r", use_consolidated=True)
        band = root["utm16n/10m/B04"]
        assert isinstance(band, zarr.Array)
        for i, f in enumerate(files):
            np.testing.assert_array_equal(_in_grid(band[i], _offset(root)), _source(f))


def test_query_in_flight_over_a_swap_is_run_again_on_the_new_version(
        tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction (grace 0: old objects deleted at once) lands between two chunk reads of
    a call: what the call read is thrown away and the call is run again, on the new
    version; the answer is the sources' pixels."""
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_GRACE", "0")
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(f) for f in files[:2]], url, chunk_size=64, quiet=True)
    store = pz.open_store(url)
    runs = []

    def call() -> list[np.ndarray]:
        arr = store._array("utm16n/10m", "B04")
        first = np.asarray(arr[0])
        if not runs:
            pz.compact(url, time_chunk=4, quiet=True)  # the swap, mid-call
        runs.append(1)
        return [first, np.asarray(arr[1])]

    got = store._pin.run(call)
    assert len(runs) == 2
    at = _offset(zarr.open_group(url, mode="r", use_consolidated=True))
    for i in range(2):
        np.testing.assert_array_equal(_in_grid(got[i], at), _source(files[i]))


def test_rewrite_in_place_makes_queries_wait_then_fail_clearly(
        tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that rewrites committed dates in place (here: one that marked the store and
    was killed) makes queries wait; past ``PARCELZARR_SNAPSHOT_WAIT`` they fail with one
    line, and nothing is returned. The next writer's commit makes the store readable."""
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(files[0])], url, chunk_size=64, quiet=True)
    store = pz.open_store(url)
    with open_store_handle(url) as handle:
        mark_in_place(handle)
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_WAIT", "1")
    t0 = time.monotonic()
    with pytest.raises(StoreChangedError, match="retry") as info:
        store.read(PARCEL, bands=["B04"], crs="EPSG:32616")
    assert 1 <= time.monotonic() - t0 < 10
    assert "\n" not in str(info.value)
    pz.ingest([str(files[1])], url, chunk_size=64, quiet=True)
    ds = store.read(PARCEL, bands=["B04"], crs="EPSG:32616")
    assert ds.sizes["time"] == 2


def test_failed_write_into_a_committed_date_leaves_the_store_readable(
        tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile added to a committed date whose middle block is corrupt: the ingest marks the
    store, fails while writing, rolls back and commits it readable again: a query right
    after it reads the committed pixels without waiting."""
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(files[0])], url, chunk_size=64, quiet=True)
    (tmp_path / "bad").mkdir()
    bad = write_tif(tmp_path / "bad" / f"T16TBL_{DATES[0]}_B04_10m.tif",
                    scene_data((SIZE, SIZE), seed=9), origin=ORIGIN, block=64)
    _corrupt_middle_block(bad)
    with pytest.raises(InvalidSourceError):
        pz.ingest([str(bad)], url, chunk_size=64, quiet=True)
    # the store was marked (queries waited) and then committed readable again: versions 1
    # (the first ingest), 2 (the mark), 3 (readable after the roll-back)
    snap = json.loads((Path(url) / "zarr.json").read_text())["attributes"][
        "parcelzarr_snapshot"]
    assert (snap["version"], snap["intact_from"]) == (3, 3)
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_WAIT", "1")
    with pz.open_store(url) as store:
        ds = store.read(shapely.box(*_bounds(files[0])), bands=["B04"], crs="EPSG:32616")
    got = ds.B04.isel(time=0).values
    np.testing.assert_array_equal(np.nan_to_num(got, nan=0).astype("uint16"),
                                  _source(files[0]))


def _bounds(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as src:
        return tuple(src.bounds)  # type: ignore[return-value]
