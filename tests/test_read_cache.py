"""``ParcelStore.read`` through its decoded-chunk cache: fewer requests, same values.

Requests are counted at the latency proxy in front of Azurite (every GET the store makes);
values are checked against rasterio reads of the source GeoTIFFs (independent oracle).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.windows
import shapely
import xarray as xr
from parcelzarr.query import _snapshot
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.testing import Azurite, LatencyProxy

from ._rasters import CRS, ORIGIN, make_scene

BANDS = ["B04", "B08"]
X0, Y0 = ORIGIN


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_scene(tmp_path_factory.mktemp("scene"))


def _box(dx: float, dy: float, w: float = 330.0, h: float = 270.0) -> shapely.Polygon:
    """A parcel ``dx`` m east and ``dy`` m south of the scene's top-left corner."""
    return shapely.box(X0 + dx, Y0 - dy - h, X0 + dx + w, Y0 - dy)


def _check_against_source(ds: xr.Dataset, geom: shapely.Geometry,
                          sources: dict[str, Path]) -> None:
    """The parcel's pixels equal a rasterio read of the source; outside pixels are nodata."""
    for band in BANDS:
        with rasterio.open(sources[band]) as src:
            win = rasterio.windows.from_bounds(*ds.rio.bounds(), transform=src.transform)
            win = win.round_offsets().round_lengths()
            expect = src.read(1, window=win)
            inside = ~geometry_mask([geom], out_shape=expect.shape,
                                    transform=src.window_transform(win))
        np.testing.assert_array_equal(ds["inside"].values, inside)
        got = ds[band].values
        assert got.dtype == expect.dtype
        np.testing.assert_array_equal(got[0][inside], expect[inside])
        assert (got[0][~inside] == 0).all()


def _sources(scene: list[Path]) -> dict[str, Path]:
    return {b: next(p for p in scene if f"_{b}_" in p.name) for b in BANDS}


@pytest.mark.azure
def test_neighbour_read_fetches_fewer_chunks(
    scene: list[Path], azurite: Azurite, az_container: str, proxy: LatencyProxy,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # a cached answer may lag the newest commit by FRESH_S; long here, so the counts below
    # do not depend on how fast this machine is (the bound itself: the test after this one)
    monkeypatch.setattr(_snapshot, "FRESH_S", 600.0)
    url = f"az://{az_container}/store.zarr"
    pz.ingest([str(p) for p in scene], url, storage_options=azurite.storage_options(),
              quiet=True, chunk_size=128)
    store = pz.open_store(url, storage_options=azurite.storage_options(proxy.endpoint))
    # a parcel across a corner of four chunks (of the grid's lattice) and its east neighbour
    spec = next(iter(store.grids.values())).spec
    cx = spec.x0 + 2 * spec.chunk_x * spec.res_x - X0
    cy = Y0 - (spec.y0 - 2 * spec.chunk_y * spec.res_y)
    first, neighbour = _box(cx - 150, cy - 130), _box(cx + 200, cy - 100, 150, 150)

    before = proxy.requests
    ds1 = store.read(first, bands=BANDS, crs=CRS)
    cold = proxy.requests - before
    before = proxy.requests
    ds2 = store.read(neighbour, bands=BANDS, crs=CRS)
    warm = proxy.requests - before

    # four chunks of each band, one request each, and the root GET that checks the version
    # read is still the store's (docs/snapshots.md); the neighbour's chunks are all cached
    # from that confirmed version: no request at all
    assert cold == 4 * len(BANDS) + 1
    assert warm == 0 < cold
    assert store.read_cache.hits > 0
    _check_against_source(ds1, first, _sources(scene))
    _check_against_source(ds2, neighbour, _sources(scene))
    before = proxy.requests
    again = store.read(first, bands=BANDS, crs=CRS)
    assert proxy.requests == before
    xr.testing.assert_identical(again, ds1)
    store.close()


def test_cached_read_sees_a_new_commit_after_the_freshness_bound(
        scene: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept handle answering from its cache checks the root again once FRESH_S has passed
    since the last check, and then reads the date another writer committed meanwhile."""
    monkeypatch.setattr(_snapshot, "FRESH_S", 0.3)
    url = str(tmp_path / "fresh.zarr")
    pz.ingest([str(p) for p in scene], url, quiet=True, chunk_size=128)
    store = pz.open_store(url)
    parcel = _box(400, 300)
    first = store.read(parcel, bands=BANDS, crs=CRS)
    assert first.sizes["time"] == 1
    _check_against_source(first, parcel, _sources(scene))
    later = make_scene(tmp_path / "later", date="20240715T165849", seed=7)
    pz.ingest([str(p) for p in later], url, quiet=True, chunk_size=128)
    time.sleep(0.4)
    again = store.read(parcel, bands=BANDS, crs=CRS)
    assert again.sizes["time"] == 2  # the new date, read after the root check
    _check_against_source(again.isel(time=[0]), parcel, _sources(scene))
    _check_against_source(again.isel(time=[1]), parcel, _sources(later))
    store.close()


def test_cache_stays_within_its_bound(scene: list[Path], tmp_path: Path) -> None:
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(p) for p in scene], url, quiet=True, chunk_size=128)
    chunk_bytes = 128 * 128 * 2
    store = pz.open_store(url, read_cache_mb=3.5 * chunk_bytes / 1e6)
    bound = store.read_cache.max_bytes
    rng = np.random.default_rng(11)
    for _ in range(25):
        geom = _box(rng.uniform(100, 5800), rng.uniform(100, 5000))
        ds = store.read(geom, bands=BANDS, crs=CRS)
        assert 0 < store.read_cache.nbytes <= bound
        held = store.read_cache.keys()
        assert store.read_cache.nbytes == sum(
            store.read_cache.get(k).nbytes for k in held)  # type: ignore[union-attr]
        _check_against_source(ds, geom, _sources(scene))
    assert len(store.read_cache) <= 3
    off = pz.open_store(url, read_cache_mb=0)
    ds = off.read(_box(300, 300), bands=BANDS, crs=CRS)
    assert len(off.read_cache) == 0 and off.read_cache.nbytes == 0
    _check_against_source(ds, _box(300, 300), _sources(scene))


def test_env_var_sets_the_bound(scene: list[Path], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(p) for p in scene[:1]], url, quiet=True, chunk_size=128)
    monkeypatch.setenv("PARCELZARR_READ_CACHE_MB", "2.5")
    assert pz.open_store(url).read_cache.max_bytes == 2_500_000
    assert pz.open_store(url, read_cache_mb=1).read_cache.max_bytes == 1_000_000
    monkeypatch.setenv("PARCELZARR_READ_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="PARCELZARR_READ_CACHE_MB"):
        pz.open_store(url)


def test_time_blocks_of_a_compacted_store(tmp_path: Path) -> None:
    dates = ["20240410T165849", "20240515T165849", "20240615T165849"]
    scenes = {d: make_scene(tmp_path / d, date=d, bands=BANDS, seed=i * 10)
              for i, d in enumerate(dates)}
    url = str(tmp_path / "store.zarr")
    pz.ingest([str(p) for ps in scenes.values() for p in ps], url, quiet=True, chunk_size=128)
    pz.compact(url, time_chunk=2, quiet=True)
    store = pz.open_store(url)
    geom = _box(1230, 1210)
    picked = [dates[0], dates[2]]  # one date of each time block, not contiguous
    for sel in (None, [f"{d[:4]}-{d[4:6]}-{d[6:8]}" for d in picked]):
        ds = store.read(geom, bands=BANDS, crs=CRS, time=sel)
        want = dates if sel is None else picked
        assert ds.sizes["time"] == len(want)
        for i, d in enumerate(want):
            _check_against_source(ds.isel(time=[i]), geom, _sources(scenes[d]))
    assert store.read_cache.hits > 0
