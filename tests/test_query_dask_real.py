"""The Dask path on real data (blocks of one chunk, straddlers reduced by the driver):
rsgislib's Aberystwyth Sentinel-2 without nodata, weighted by one of its bands.

Oracle: the single-process query (``_compare``: identical rows, the same requests and bytes)
and numpy on the source GeoTIFF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import geometry_mask

import parcelzarr as pz

from ._rasters import SHARED_DATA
from .test_query_dask_edges import _run, client, one_chunk_blocks

__all__ = ["client", "one_chunk_blocks"]  # the fixtures


ABER = SHARED_DATA / "rsgislib-aber"


@pytest.mark.usefixtures("one_chunk_blocks")
def test_real_s2_without_nodata_and_its_classes(tmp_path: Path, client: Any) -> None:
    """rsgislib's real Aberystwyth S2 (10 bands, uint16, no nodata: the grid is padded to
    its chunks, so only the source footprint holds data) and its classification raster,
    in 128-px chunks, with its real polygons (single, holed, multi, and the region of
    interest crossing the raster's edge): weighted by a band without nodata, and class rows
    weighted by it; the region's count and mean are numpy's on the GeoTIFF."""
    if not ABER.exists():
        pytest.skip("shared real data not available")
    url = str(tmp_path / "a.zarr")
    for path, band in ((ABER / "sen2_20210527_aber_rebuilt.tif", "S2"),
                       (ABER / "sen2_20210527_aber_cls.tif", "cls")):
        pz.ingest(path, url, band=band, time="2021-05-27", quiet=True, chunk_size=128)
    store = pz.open_store(url)
    parcels = pd.concat([gpd.read_file(ABER / f"{n}.geojson") for n in (
        "aber_osgb_region_of_interest", "sen2_20210527_aber_polygons",
        "aber_osgb_multi_polys", "aber_osgb_single_poly_hole")], ignore_index=True)
    parcels = gpd.GeoDataFrame(geometry=parcels.geometry, crs=parcels.crs)
    df = _run(store, parcels, client, min_straddlers=5, bands=["S2_1", "S2_4"],
              weights="coverage", weights_band="S2_8",
              stats="count,mean,median,nodata,weighted_mean,weighted_sum")
    _run(store, parcels, client, min_straddlers=5, bands=["cls"], categorical=True,
         stats="count", weights_band="S2_8")
    with rasterio.open(ABER / "sen2_20210527_aber_rebuilt.tif") as src:
        geom = parcels.to_crs(src.crs).geometry.iloc[0]
        inside = ~geometry_mask([geom], out_shape=src.shape, transform=src.transform)
        v = src.read(1).astype(np.float64)[inside]
    centre = store.zonal_stats(parcels.iloc[:1], scheduler=client, bands=["S2_1"],
                               stats="count,mean")
    assert centre["count"].iloc[0] == v.size == 647_280
    assert centre["mean"].iloc[0] == pytest.approx(v.mean(), rel=1e-12)
    assert df["count"].gt(0).sum() >= 2 * (len(parcels) - 1)
