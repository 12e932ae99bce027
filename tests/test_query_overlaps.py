"""Overlap colouring of the centre rule (query/_plan.py): parcels share a burn pass unless
one pixel centre lies in both, however long or thin their overlap."""

from __future__ import annotations

import numpy as np
import shapely
from parcelzarr.query._plan import overlap_passes
from pyproj import CRS
from rasterio.features import geometry_mask

from parcelzarr._grid import GridSpec

SPEC = GridSpec(CRS.from_epsg(32616).to_wkt(), 10.0, 10.0, 0.0, 300.0, 30, 30)

# a: below the line y = x/2 + 0.3; b: above y = x/2 + 0.29. They overlap on a 0.01 m sliver
# along 300 m of diagonal, whose bounding box spans 450 pixel centres but holds none
# (centres (5 + 10i, 5 + 10j) are 2.8 m (mod 5) from the line).
A = shapely.Polygon([(0, 0), (300, 0), (300, 150.3), (0, 0.3)])
B = shapely.Polygon([(0, 0.29), (300, 150.29), (300, 300), (0, 300)])


def _centres(geom: shapely.Geometry) -> np.ndarray:
    """Pixel-centre mask of ``geom`` on SPEC, by GDAL (rasterio) — the independent oracle."""
    return ~geometry_mask([geom], (SPEC.height, SPEC.width), SPEC.transform)


def test_a_long_sliver_without_a_centre_shares_a_pass() -> None:
    assert not (_centres(A) & _centres(B)).any()  # the oracle: no pixel both claim
    passes = overlap_passes(np.array([A, B]), all_touched=False, res=10.0, spec=SPEC)
    assert passes[0] == passes[1]


def test_an_overlap_holding_one_centre_splits_the_passes() -> None:
    b = shapely.union(B, shapely.box(150, 73, 160, 77))  # reaches down over centre (155, 75)
    assert (_centres(A) & _centres(b)).sum() == 1
    passes = overlap_passes(np.array([A, b]), all_touched=False, res=10.0, spec=SPEC)
    assert passes[0] != passes[1]
