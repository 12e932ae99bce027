"""Ground area of a grid's pixels in square metres, on any CRS (pure).

* Geographic grids (EPSG:4326 CORINE, WorldCover, ...): a pixel is the ellipsoidal
  quadrangle between two meridians and two parallels; its area depends only on its row
  (latitude). It is computed in closed form on the CRS's own ellipsoid:
  ``Δλ · (S(φ_top) − S(φ_bottom))`` with
  ``S(φ) = b²/2 · [sin φ / (1 − e² sin² φ) + ln((1 + e sin φ) / (1 − e sin φ)) / (2e)]``,
  the area between the equator and latitude φ per radian of longitude.
* Projected grids: ``res_x · res_y`` in the CRS's units, converted to metres (US feet and
  other linear units included). This is the map-plane area: within 0.1 % of the ground area
  on UTM; far off on non-equal-area projections such as Web Mercator (see
  :func:`areal_scale`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from pyproj import CRS, Proj, Transformer

from parcelzarr._grid import GridSpec

if TYPE_CHECKING:
    from pyproj._crs import Axis

__all__ = ["areal_scale", "row_areas"]


def _zone_area(phi: np.ndarray, a: float, b: float) -> np.ndarray:
    """Area between the equator and latitude ``phi`` (radians) per radian of longitude."""
    e2 = 1.0 - (b * b) / (a * a)
    s = np.sin(phi)
    if e2 < 1e-15:  # a sphere
        return a * a * s
    e = math.sqrt(e2)
    return (b * b / 2.0) * (s / (1.0 - e2 * s * s)
                            + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e))


def row_areas(spec: GridSpec) -> np.ndarray:
    """Ground area in m² of one pixel in each row of ``spec`` (length ``spec.height``)."""
    crs = spec.crs
    fx, fy = (a.unit_conversion_factor for a in _xy_axes(crs))
    if crs.is_geographic:
        ell = crs.ellipsoid
        if ell is None:
            raise ValueError(f"{crs.name} has no ellipsoid: cannot compute pixel areas")
        # rows go south; clip to the poles so a grid edge beyond ±90° adds nothing
        edges = spec.y0 - np.arange(spec.height + 1) * spec.res_y
        phi = np.clip(edges * fy, -math.pi / 2, math.pi / 2)
        zone = _zone_area(phi, ell.semi_major_metre, ell.semi_minor_metre)
        return np.abs(zone[:-1] - zone[1:]) * (spec.res_x * fx)
    return np.full(spec.height, spec.res_x * fx * spec.res_y * fy)


def areal_scale(spec: GridSpec) -> float:
    """Map area / ground area at the centre of a projected grid (1.0 for geographic grids).

    Near 1 on UTM (0.9992–1.002); about 1/cos²φ on Web Mercator.
    """
    crs = spec.crs
    if crs.is_geographic:
        return 1.0
    left, bottom, right, top = spec.bounds
    geo = crs.geodetic_crs or CRS.from_epsg(4326)
    to_geo = Transformer.from_crs(crs, geo, always_xy=True)
    lon, lat = to_geo.transform((left + right) / 2, (bottom + top) / 2)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return 1.0
    factors = Proj(crs).get_factors(lon, lat)
    return float(factors.areal_scale)


def _xy_axes(crs: CRS) -> tuple[Axis, Axis]:
    """The (east, north) axes of a 2D CRS, whatever their declared order."""
    axes = crs.axis_info[:2]
    east = next((a for a in axes if a.direction.lower() in ("east", "west")), axes[0])
    north = next((a for a in axes if a.direction.lower() in ("north", "south")), axes[-1])
    return east, north
