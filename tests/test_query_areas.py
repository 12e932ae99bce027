"""``area_m2`` of categorical statistics is in square metres on any CRS (issue 8, item 3).

Oracles: pyproj's geodesic area (``Geod``) of each pixel row and of the parcel geometries, and
rasterio/numpy on the source GeoTIFF; parcelzarr only reads its own store. Real data: CORINE
land cover 2018 of São Miguel (EPSG:4326) and its six concelhos (../shared/data/sao-miguel).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Geod
from rasterio.features import geometry_mask

import parcelzarr as pz

from ._rasters import SHARED_DATA, write_tif

SAO = SHARED_DATA / "sao-miguel"
needs_data = pytest.mark.skipif(not SAO.exists(), reason="shared real data not available")


def _geod_row_areas(transform: rasterio.Affine, rows: np.ndarray) -> np.ndarray:
    """Area of one pixel in each row, from pyproj's geodesic polygon area of its corners."""
    geod = Geod(ellps="WGS84")
    x0, x1 = transform.c, transform.c + transform.a
    out = []
    for r in rows:
        top = transform.f + r * transform.e
        bottom = top + transform.e
        area, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [bottom, bottom, top, top])
        out.append(abs(area))
    return np.asarray(out)


@needs_data
def test_corine_class_areas_are_square_metres(tmp_path: Path) -> None:
    corine = SAO / "clc2018_v2020_20u1.tif"
    url = str(tmp_path / "corine.zarr")
    pz.ingest([str(corine)], url, band="corine", time="2018-01-01", quiet=True)
    concelhos = gpd.read_file(SAO / "concelhos.gpkg")
    df = pz.open_store(url).zonal_stats(concelhos, categorical=True, id_column="name")

    # independent oracle: the source pixels whose centre is in the concelho, each weighing
    # the geodesic area of its row's pixel, summed per class
    with rasterio.open(corine) as src:
        values = src.read(1)
        transform = src.transform
    row_area = _geod_row_areas(transform, np.arange(values.shape[0]))
    geod = Geod(ellps="WGS84")
    for name, geom in zip(concelhos["name"], concelhos.geometry, strict=True):
        inside = ~geometry_mask([geom], values.shape, transform)
        rows, _ = np.nonzero(inside)
        cls = values[inside]
        expect = {int(c): float(row_area[rows[cls == c]].sum()) for c in np.unique(cls)}
        ours = df[df["name"] == name]
        got = dict(zip(ours["class"].astype(int), ours["area_m2"], strict=True))
        assert got.keys() == expect.keys(), name
        for c, area in expect.items():
            assert got[c] == pytest.approx(area, rel=1e-7), (name, c)
        # the classes add up to the concelho's own geodesic area (pixel-centre rule: ~1 %)
        true_area = abs(geod.geometry_area_perimeter(geom)[0])
        assert ours["area_m2"].sum() == pytest.approx(true_area, rel=0.01), name

    lagoa = df[df["name"] == "Lagoa"]["area_m2"].sum()
    assert lagoa / 1e6 == pytest.approx(45.6, abs=0.1)  # issue 8: not 0.0047 "square degrees"


def test_projected_areas_convert_feet_to_metres(tmp_path: Path) -> None:
    """A CDL-like layer on a US-survey-foot CRS (EPSG:2236): each 30 ft pixel is
    (30 * 1200/3937 m)², not 900."""
    data = np.repeat(np.array([[1, 5], [24, 1]], dtype="uint8"), 20, axis=0).repeat(20, axis=1)
    tif = write_tif(tmp_path / "cdl_ft.tif", data, origin=(600_000.0, 600_000.0), res=30.0,
                    crs="EPSG:2236", nodata=0)
    url = str(tmp_path / "ft.zarr")
    pz.ingest([str(tif)], url, band="cdl", time="2023-01-01", quiet=True)
    parcel = gpd.GeoSeries.from_xy([600_000.0 + 600], [600_000.0 - 600], crs="EPSG:2236")
    parcel = parcel.buffer(450, cap_style="square")  # 900 ft square: 30 x 30 pixels
    df = pz.open_store(url).zonal_stats(parcel, categorical=True)
    pixel_m2 = (30 * 1200 / 3937) ** 2
    np.testing.assert_allclose(df["area_m2"], df["count"] * pixel_m2, rtol=1e-12)
    assert df["count"].sum() == 900
