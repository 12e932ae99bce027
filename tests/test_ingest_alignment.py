"""Which sources share a grid already in the store: every pixel corner of the source within
1e-6 px of the grid corner it lands on, over the whole source (origin phase and the drift of
a resolution that differs in the last digits). Pixels are then copied one to one.

rasterstats' ``slope_classes.tif`` has pixels 9.2e-8 m (3.6e-9 relative) taller than
``slope.tif``'s and an origin 3.7e-6 m away: its corners lie within 4.3e-7 px (1.1e-5 m) of
slope's grid, yet a relative tolerance of 1e-9 on the resolution refused it into that grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import parcelzarr as pz
from parcelzarr.errors import IngestConflictError

from ._rasters import ORIGIN, SHARED_DATA, write_tif

SLOPE = SHARED_DATA / "rasterstats" / "slope.tif"
CLASSES = SHARED_DATA / "rasterstats" / "slope_classes.tif"


def _corner_error_px(grid: Affine, src: Affine, width: int, height: int) -> float:
    """The oracle, from the two transforms alone: largest |source corner - grid corner| in
    grid pixels over the source's first and last corners."""
    col = round((src.c - grid.c) / grid.a)
    row = round((src.f - grid.f) / grid.e)
    xs = [(src.c + i * src.a - grid.c) / grid.a - (col + i) for i in (0, width)]
    ys = [(src.f + j * src.e - grid.f) / grid.e - (row + j) for j in (0, height)]
    return max(abs(v) for v in xs + ys)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared real data not available")
def test_slope_classes_shares_slopes_grid_pixel_for_pixel(tmp_path: Path) -> None:
    with rasterio.open(SLOPE) as a, rasterio.open(CLASSES) as b:
        assert a.transform != b.transform
        assert _corner_error_px(a.transform, b.transform, b.width, b.height) < 1e-6
        want, t = b.read(1, masked=True).astype("float64").filled(np.nan), b.transform
    url = str(tmp_path / "s.zarr")
    pz.ingest(str(SLOPE), url, band="slope", time="2020-01-01", quiet=True, chunk_size=32)
    pz.ingest(str(CLASSES), url, band="slope_classes", time="2020-01-01", quiet=True,
              chunk_size=32)
    store = pz.open_store(url)
    ds = store.to_xarray()
    got = ds["slope_classes"].isel(time=0)
    # the source's pixel centres, looked up by coordinate in the store's grid
    xs = t.c + (np.arange(want.shape[1]) + 0.5) * t.a
    ys = t.f + (np.arange(want.shape[0]) + 0.5) * t.e
    stored = got.sel(x=xs, y=ys, method="nearest").to_numpy()
    np.testing.assert_array_equal(stored, want)
    assert float(np.abs(got.x.sel(x=xs, method="nearest").to_numpy() - xs).max()) < 1e-5


def test_a_resolution_drifting_beyond_a_micro_pixel_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    data = np.arange(1, 2001, dtype="uint16")[None, :].repeat(4, axis=0)
    pz.ingest(str(write_tif(tmp_path / "a.tif", data, nodata=0)), url, band="v",
              time="2024-01-01", quiet=True)
    res = 10.0 * (1 + 0.9e-9)
    near = write_tif(tmp_path / "near.tif", data[:, :200], res=res, nodata=0)
    far = write_tif(tmp_path / "far.tif", data, res=res, nodata=0)
    grid = Affine(10.0, 0, ORIGIN[0], 0, -10.0, ORIGIN[1])
    assert _corner_error_px(grid, Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]), 200, 4) < 1e-6
    assert _corner_error_px(grid, Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]), 2000, 4) > 1e-6
    pz.ingest(str(near), url, band="v", time="2024-01-02", quiet=True)
    with pytest.raises(IngestConflictError, match="not on the pixel grid"):
        pz.ingest(str(far), url, band="v", time="2024-01-03", quiet=True)
