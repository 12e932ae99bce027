"""Grid growth is committed with its data, bounded, and keeps every tile of a run.

Oracles: rasterio reads of the sources merged with numpy (first valid pixel wins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

import parcelzarr as pz
from parcelzarr.errors import GridGrowthError, InvalidSourceError

from ._rasters import scene_data, write_tif
from .test_ingest_tiles import object_stamps

A = (300_000.0, 4_500_000.0)


def _grid(url: str) -> zarr.Group:
    root = zarr.open_group(url, mode="r", use_consolidated=True)
    group = root["utm16n/10m"]
    assert isinstance(group, zarr.Group)
    return group


def _expected(group: zarr.Group, paths: list[Path]) -> np.ndarray:
    x, y = group["x"][:], group["y"][:]
    canvas = np.zeros((y.size, x.size), dtype="uint16")
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            c0 = round((src.bounds.left - (x[0] - 5)) / 10)
            r0 = round(((y[0] + 5) - src.bounds.top) / 10)
        view = canvas[r0:r0 + data.shape[0], c0:c0 + data.shape[1]]
        assert view.shape == data.shape
        take = (view == 0) & (data != 0)
        view[take] = data[take]
    return canvas


def test_one_run_growing_west_and_east_keeps_both_tiles(tmp_path: Path) -> None:
    """Each source is planned against the grid as grown by the ones before it (it used to be
    the stored grid: the western tile was clipped away without a word)."""
    first = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif", scene_data((200, 200), 1),
                      origin=A)
    west = write_tif(tmp_path / "T16TAK_20240601T100000_B04_10m.tif", scene_data((200, 200), 2),
                     origin=(A[0] - 3_000, A[1]))
    east = write_tif(tmp_path / "T16TCK_20240601T100000_B04_10m.tif", scene_data((200, 200), 3),
                     origin=(A[0] + 3_000, A[1]))
    url = str(tmp_path / "grow.zarr")
    pz.ingest([str(first)], url, quiet=True, chunk_size=64)
    report = pz.ingest([str(west), str(east)], url, quiet=True)
    assert report.sources_written == 2
    group = _grid(url)
    # overlaps: the smallest tile id wins
    np.testing.assert_array_equal(group["B04"][0], _expected(group, [west, first, east]))


def _contents(url: str) -> dict[str, bytes]:
    return {p.relative_to(url).as_posix(): p.read_bytes() for p in Path(url).rglob("*")
            if p.is_file() and p.name != "parcelzarr-writer.lock"}


def _corrupt_middle_block(path: Path) -> None:
    """Overwrite one inner tile's compressed bytes (the first and last blocks stay readable,
    so the up-front check passes and the ingest fails while writing)."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


def test_failing_ingest_leaves_the_grid_as_committed(tmp_path: Path) -> None:
    """A corrupt tile east of the grid: the ingest fails, the committed grid keeps its extent
    and pixels, nothing uncommitted is left, and a good file then ingests normally."""
    first = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif", scene_data((200, 200), 1),
                      origin=A, block=64)
    (tmp_path / "bad").mkdir()
    bad = write_tif(tmp_path / "bad" / "T16TCK_20240611T100000_B04_10m.tif",
                    scene_data((300, 300), 2), origin=(A[0] + 1_500, A[1]), block=64)
    _corrupt_middle_block(bad)
    url = str(tmp_path / "fail.zarr")
    pz.ingest([str(first)], url, quiet=True, chunk_size=64)
    shape = _grid(url)["B04"].shape
    objects = _contents(url)
    with pytest.raises(InvalidSourceError, match="nothing of this ingest was committed"):
        pz.ingest([str(bad)], url, quiet=True)
    group = _grid(url)
    assert group["B04"].shape == shape
    np.testing.assert_array_equal(group["B04"][0], _expected(group, [first]))
    # the failed run undid its live changes: the same objects with the same bytes
    assert _contents(url) == objects
    good = write_tif(tmp_path / "T16TCK_20240611T100000_B04_10m.tif", scene_data((300, 300), 2),
                     origin=(A[0] + 1_500, A[1]), block=64)
    pz.ingest([str(good)], url, quiet=True)
    group = _grid(url)
    np.testing.assert_array_equal(group["B04"][0], _expected(group, [first]))
    np.testing.assert_array_equal(group["B04"][1], _expected(group, [good]))


def _sparse_tif(path: Path, size: int, origin: tuple[float, float]) -> Path:
    """A ``size``-square GeoTIFF holding one 64 px block of data; the rest is never written
    (GDAL's SPARSE_OK), so the file stays tiny."""
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint16",
               "crs": "EPSG:32616", "nodata": 0, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "sparse_ok": True,
               "transform": rasterio.transform.from_origin(*origin, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(scene_data((64, 64), 5), 1, window=rasterio.windows.Window(0, 0, 64, 64))
    return path


def test_growth_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse 200000 x 200000 px GeoTIFF (a tiny file) is refused before anything is
    written; the bound is a setting and an option."""
    url = str(tmp_path / "bound.zarr")
    huge = _sparse_tif(tmp_path / "huge.tif", 200_000, A)
    assert huge.stat().st_size < 10_000_000
    with pytest.raises(GridGrowthError, match=r"would add 40,\d{3},\d{3},\d{3} px"):
        pz.ingest([str(huge)], url, band="B04", time="2024-06-01", quiet=True)
    assert not [p for p in Path(url).rglob("*") if p.is_file()]  # nothing written

    first = write_tif(tmp_path / "T16TBK_20240601T100000_B04_10m.tif", scene_data((200, 200), 1),
                      origin=A)
    pz.ingest([str(first)], url, quiet=True, chunk_size=64)
    far = write_tif(tmp_path / "T16TBK_20240611T100000_B04_10m.tif", scene_data((200, 200), 2),
                    origin=(A[0] + 20_000, A[1]))  # adds ~2000 x 256 px to the grid
    stamps = object_stamps(url, None)
    monkeypatch.setenv("PARCELZARR_MAX_GROWTH_PX", "100000")
    with pytest.raises(GridGrowthError, match="grid utm16n/10m") as info:
        pz.ingest([str(far)], url, quiet=True)
    assert "PARCELZARR_MAX_GROWTH_PX" in str(info.value) and "\n" not in str(info.value)
    assert object_stamps(url, None) == stamps
    report = pz.ingest([str(far)], url, quiet=True, max_growth_px=1_000_000)
    assert report.sources_written == 1
    group = _grid(url)
    np.testing.assert_array_equal(group["B04"][1], _expected(group, [far]))
