"""all_touched on degenerate parcels (edges along pixel edges or through pixel corners): the
pixels a parcel overlaps with positive area, the same in every chunking (issue 8).

GDAL's all-touched burn of such a parcel depends on the window it rasterises (rasterio gives
rasterstats' degenerate triangle 10, 11 or 12 cells with different windows), so a store burnt
chunk by chunk answered differently per chunk size. The oracle is exact geometry on the source
grid (shapely: cells whose area inside the parcel is positive); rasterstats, burning in the
parcel's own window, agrees with it on these parcels.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterstats import zonal_stats as rs_zonal_stats

import parcelzarr as pz

from ._rasters import SHARED_DATA, write_tif

SLOPE = SHARED_DATA / "rasterstats" / "slope.tif"
TRIANGLES = SHARED_DATA / "rasterstats" / "polygons_no_overlap.shp"
CHUNKS = (16, 32, 64, 256)


def _exact_touched(tif: Path, geom: shapely.Geometry) -> tuple[int, int]:
    """(valid cells, nodata cells) the parcel overlaps with positive area, on the source grid
    (cells beyond the raster are nodata, as rasterstats counts them)."""
    with rasterio.open(tif) as ds:
        t, ok = ds.transform, ds.read_masks(1) > 0
        height, width = ds.height, ds.width
    left, bottom, right, top = geom.bounds
    c0, c1 = int(np.floor((left - t.c) / t.a)) - 1, int(np.ceil((right - t.c) / t.a)) + 1
    r0, r1 = int(np.floor((top - t.f) / t.e)) - 1, int(np.ceil((bottom - t.f) / t.e)) + 1
    rows, cols = np.mgrid[r0:r1, c0:c1]
    x, y = t.c + cols * t.a, t.f + rows * t.e
    boxes = shapely.box(x, y + t.e, x + t.a, y)
    hit = shapely.area(shapely.intersection(boxes, geom)) > 0
    on = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    valid = on & ok[rows.clip(0, height - 1), cols.clip(0, width - 1)]
    return int((hit & valid).sum()), int((hit & ~valid).sum())


def _ours(tif: Path, parcels: gpd.GeoDataFrame, tmp: Path, chunk: int) -> np.ndarray:
    url = str(tmp / f"c{chunk}.zarr")
    pz.ingest(str(tif), url, band="v", time="2020-01-01", quiet=True, chunk_size=chunk)
    df = pz.open_store(url).zonal_stats(parcels, all_touched=True, stats=["count", "nodata"])
    return df[["count", "nodata"]].to_numpy(int)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared real data not available")
def test_degenerate_triangle_takes_the_cells_it_overlaps_in_every_chunking(
        tmp_path: Path) -> None:
    with rasterio.open(SLOPE) as ds:
        crs, t = ds.crs, ds.transform
    tri = gpd.read_file(TRIANGLES).set_crs(crs, allow_override=True).iloc[[8]]
    geom = tri.geometry.iloc[0]
    want = _exact_touched(SLOPE, geom)
    assert want == (0, 10)  # four rows of cells above the raster; it only touches row 0
    # GDAL alone depends on the window: the reason for the rule
    burns = {int(rasterize([(geom, 1)], out_shape=(h, w), all_touched=True, dtype="uint8",
                           transform=t * t.translation(c, r)).sum())
             for r, c, h, w in ((-4, 0, 4, 4), (-5, -1, 6, 6), (-8, -8, 16, 16))}
    assert burns == {10, 11, 12}
    peer = rs_zonal_stats([geom], str(SLOPE), all_touched=True, stats=["count", "nodata"])[0]
    assert (peer["count"], peer["nodata"]) == want
    for chunk in CHUNKS:
        assert tuple(_ours(SLOPE, tri, tmp_path, chunk)[0]) == want, chunk


def test_pixel_edge_parcels_beyond_and_inside_the_grid(tmp_path: Path) -> None:
    """A grid on its chunk lattice (no padding): a triangle wholly beyond its top edge
    (counted by the outside-the-grid path) and a square drawn on pixel edges inside it."""
    x0, y0 = 320_000.0, 4_480_000.0  # a multiple of 32 x 10 m: no lattice padding
    tif = write_tif(tmp_path / "v.tif", np.arange(1, 64 * 64 + 1, dtype="uint16")
                    .reshape(64, 64), origin=(x0, y0), nodata=None)
    geoms = [shapely.Polygon([(x0, y0), (x0 + 40, y0 + 40), (x0 + 40, y0)]),
             shapely.box(x0 + 100, y0 - 200, x0 + 200, y0 - 100),
             shapely.Polygon([(x0 + 300, y0 - 300), (x0 + 400, y0 - 200),
                              (x0 + 400, y0 - 300)])]
    parcels = gpd.GeoDataFrame(geometry=geoms, crs="EPSG:32616")
    want = np.array([_exact_touched(tif, g) for g in geoms])
    np.testing.assert_array_equal(want, [(0, 10), (100, 0), (55, 0)])
    for chunk in (16, 32):
        np.testing.assert_array_equal(_ours(tif, parcels, tmp_path, chunk), want,
                                      err_msg=f"chunk {chunk}")
