"""Synthetic county-like parcel polygons for the demo, the tests and the benchmark.

The pattern imitates the US Midwest (Public Land Survey System): a grid of roughly one-mile
sections separated by roads, each section split recursively into fields along its axes (halves,
quarters and irregular cuts), a few towns of small lots on street blocks, and the awkward cases a
zonal-statistics engine must survive: sub-pixel parcels, 8 m slivers, fields with a farmstead
hole, fields split by a road or creek into a MultiPolygon.

The computation is pure (numpy, shapely); nothing is written to disk here.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from dataclasses import dataclass
from enum import IntEnum

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = [
    "CropClass",
    "ParcelKind",
    "generate_parcels",
    "parcels_bounds_for_area",
]

logger = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]
Ring = list[tuple[float, float]]  # convex ring, counter-clockwise, not closed

_PARCELS_PER_SECTION = 25.0  # average parcels per section: 10,297 parcels / ~410 sections
_ROAD_HALF_WIDTH = 6.0  # metres; section roads are ~12 m gaps between parcels
_STREET_HALF_WIDTH = 5.0  # metres; town streets between blocks
_LOT_AREA = 3_500.0  # m², average town lot
_LOTS_PER_BLOCK = 12
_TOWN_BUILT_FRACTION = 0.75  # share of a town's area in lots (the rest is streets)

# Shares of n_parcels for each special case (rounded; see generate_parcels for small n).
_SHARE_TOWN = 0.12
_SHARE_HOLE = 0.03
_SHARE_MULTI = 0.03
_SHARE_SLIVER = 0.01
_SHARE_SUBPIXEL = 0.004
_SLIVER_WIDTH = 8.0


class CropClass(IntEnum):
    """Land-cover class codes in the ``crop`` column; the scene gives each its own spectrum."""

    CORN = 1
    SOYBEAN = 2
    WINTER_WHEAT = 3
    GRASSLAND = 4
    FOREST = 5
    FALLOW = 6
    BUILT = 7
    WATER = 8


class ParcelKind(IntEnum):
    """How a parcel was made (internal bookkeeping, also used to choose its crop class)."""

    FIELD = 1
    LOT = 2
    FARMSTEAD = 3
    SLIVER = 4
    SUBPIXEL = 5


# Probabilities of CropClass 1..8 for ordinary fields (Illinois-like: corn and soybean).
_FIELD_CROP_P = np.array([0.40, 0.34, 0.05, 0.08, 0.07, 0.04, 0.01, 0.01])


@dataclass(frozen=True)
class _Counts:
    """How many parcels of each kind to make; sums to n_parcels."""

    fields: int
    lots: int
    holes: int
    multis: int
    slivers: int
    subpixels: int


def parcels_bounds_for_area(center_x: float, center_y: float, area_km2: float) -> Bounds:
    """Square bounds ``(xmin, ymin, xmax, ymax)`` of ``area_km2`` centred on a point.

    Parameters
    ----------
    center_x, center_y
        Centre in projected metres.
    area_km2
        Area of the square in km² (DeWitt County, Illinois: ~1,050 km², 10,297 parcels).

    Examples
    --------
    >>> parcels_bounds_for_area(0.0, 0.0, 4.0)
    (-1000.0, -1000.0, 1000.0, 1000.0)
    """
    if not area_km2 > 0:
        raise ValueError(f"area_km2 must be positive, got {area_km2!r}")
    half = math.sqrt(area_km2) * 1000.0 / 2.0
    return (center_x - half, center_y - half, center_x + half, center_y + half)


def generate_parcels(
    bounds: tuple[float, float, float, float],
    *,
    n_parcels: int = 10_000,
    crs: str = "EPSG:32616",
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """Generate a realistic, deterministic field pattern of ``n_parcels`` parcels in ``bounds``.

    Sections (about 25 parcels each, ~1 mile square at county density) are separated by 12 m
    road gaps and split recursively into fields with jittered, slightly rotated cuts, so no edge
    is pixel-aligned. About 12 % of parcels are town lots (0.05–1 ha) on street blocks; about
    3 % are fields with a farmstead hole (the farmstead is its own parcel), 3 % are fields split
    by a road or creek (MultiPolygon), 1 % are 8 m wide slivers and 0.4 % are sub-pixel parcels
    (4–9 m squares, < 100 m²). Parcels never overlap; gaps (roads, streets, creeks) are allowed.
    Special cases need ``n_parcels`` large enough (towns from 200 parcels, holes and
    MultiPolygons from ~17, sub-pixel parcels from 20).

    Parameters
    ----------
    bounds
        ``(xmin, ymin, xmax, ymax)`` in projected metres; all parcels lie inside.
    n_parcels
        Exact number of rows returned.
    crs
        CRS of ``bounds`` and of the result.
    seed
        Same seed, same parcels.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``parcel_id`` (int64, unique, from 1), ``crop`` (int8, :class:`CropClass`
        codes 1..8) and ``geometry`` (valid Polygon or MultiPolygon).

    Examples
    --------
    >>> gdf = generate_parcels(parcels_bounds_for_area(350_000, 4_450_000, 25.0), n_parcels=250)
    >>> len(gdf), int(gdf.parcel_id.min())
    (250, 1)
    """
    if isinstance(n_parcels, bool) or not isinstance(n_parcels, int | np.integer):
        raise TypeError(f"n_parcels must be an int, got {type(n_parcels).__name__}")
    if n_parcels < 1:
        raise ValueError(f"n_parcels must be >= 1, got {n_parcels}")
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"bounds must be (xmin, ymin, xmax, ymax) with positive size: {bounds}")
    n = int(n_parcels)
    rng = np.random.default_rng(seed)
    prng = random.Random(int(rng.integers(2**63)))  # fast scalar draws in the split loop
    counts = _plan_counts(n)

    area = (xmax - xmin) * (ymax - ymin)
    section = math.sqrt(_PARCELS_PER_SECTION * area / n)
    sections, angles, ncols = _section_grid((xmin, ymin, xmax, ymax), section, rng)
    lot_area = min(_LOT_AREA, 0.5 * area / n)

    geoms: list[Ring | BaseGeometry] = []
    kinds: list[ParcelKind] = []
    secs: list[int] = []

    town_regions, field_regions = _carve_towns(sections, angles, ncols, counts.lots, lot_area, rng)
    for ring, sec, n_lots in town_regions:
        for lot in _town_lots(ring, n_lots, angles[sec], lot_area, prng):
            geoms.append(lot)
            kinds.append(ParcelKind.LOT)
            secs.append(sec)

    region_area = np.array([_ring_area(r) for r, _ in field_regions])
    weights = region_area * rng.lognormal(0.0, 0.7, len(field_regions))
    per_region = _allocate(counts.fields, weights)
    for (ring, sec), k in zip(field_regions, per_region, strict=True):
        for piece in _subdivide(ring, int(k), angles[sec], prng, heterogeneity=0.6):
            geoms.append(piece)
            kinds.append(ParcelKind.FIELD)
            secs.append(sec)

    _add_special_cases(geoms, kinds, secs, counts, rng, prng)
    _top_up(geoms, kinds, secs, n, angles, prng)

    crops = _assign_crops(np.array(kinds, dtype=np.int8), rng)
    polys = _to_shapely(geoms)
    invalid = ~shapely.is_valid(polys)
    if invalid.any():  # never seen in testing; repair rather than hand out broken geometry
        logger.warning("repairing %d invalid synthetic parcels", int(invalid.sum()))
        polys[invalid] = shapely.buffer(polys[invalid], 0)
    order = np.argsort(np.array(secs), kind="stable")  # ids run section by section, like PINs
    gdf = gpd.GeoDataFrame(
        {
            "parcel_id": np.arange(1, len(polys) + 1, dtype=np.int64),
            "crop": crops[order],
        },
        geometry=gpd.GeoSeries(polys[order], crs=crs),
        crs=crs,
    )
    logger.info(
        "generated %d parcels in %.0f km² (%d sections of %.0f m)",
        len(gdf),
        area / 1e6,
        len(sections),
        section,
    )
    return gdf


# --- planning -------------------------------------------------------------------------------


def _plan_counts(n: int) -> _Counts:
    """Split ``n`` into parcel kinds; each special case adds one parcel except MultiPolygons."""
    lots = round(_SHARE_TOWN * n) if n >= 200 else 0
    holes = round(_SHARE_HOLE * n)
    multis = round(_SHARE_MULTI * n)
    slivers = round(_SHARE_SLIVER * n)
    subpixels = max(1, round(_SHARE_SUBPIXEL * n)) if n >= 20 else 0
    fields = n - lots - holes - slivers - subpixels
    if fields < max(1, holes + multis + slivers + subpixels):
        holes = multis = slivers = subpixels = lots = 0
        fields = n
    return _Counts(fields, lots, holes, multis, slivers, subpixels)


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer split of ``total`` proportional to ``weights`` (largest remainder)."""
    if total <= 0 or len(weights) == 0:
        return np.zeros(len(weights), dtype=np.int64)
    share = weights / weights.sum() * total
    base = np.floor(share).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        base[np.argsort(-(share - base), kind="stable")[:rest]] += 1
    return base


def _section_grid(
    bounds: Bounds, section: float, rng: np.random.Generator
) -> tuple[list[Ring], np.ndarray, int]:
    """Jittered section quads shrunk by half a road width, their axis angles and column count."""
    xmin, ymin, xmax, ymax = bounds
    ncols = max(1, round((xmax - xmin) / section))
    nrows = max(1, round((ymax - ymin) / section))
    xs = np.linspace(xmin, xmax, ncols + 1)
    ys = np.linspace(ymin, ymax, nrows + 1)
    gx, gy = np.meshgrid(xs, ys)  # (nrows+1, ncols+1), row 0 at ymin
    dx, dy = (xmax - xmin) / ncols, (ymax - ymin) / nrows
    jx = rng.uniform(-0.03, 0.03, gx.shape) * dx
    jy = rng.uniform(-0.03, 0.03, gy.shape) * dy
    # Border vertices move inward only (and stay on their side), so everything stays in bounds.
    inward = min(20.0, 0.05 * min(dx, dy))
    jx[:, 0] = rng.uniform(0.1, 1.0, nrows + 1) * inward
    jx[:, -1] = -rng.uniform(0.1, 1.0, nrows + 1) * inward
    jy[0, :] = rng.uniform(0.1, 1.0, ncols + 1) * inward
    jy[-1, :] = -rng.uniform(0.1, 1.0, ncols + 1) * inward
    gx, gy = gx + jx, gy + jy

    quads = []
    for r in range(nrows):
        for c in range(ncols):
            quads.append(
                Polygon(
                    [
                        (gx[r, c], gy[r, c]),
                        (gx[r, c + 1], gy[r, c + 1]),
                        (gx[r + 1, c + 1], gy[r + 1, c + 1]),
                        (gx[r + 1, c], gy[r + 1, c]),
                    ]
                )
            )
    half_road = min(_ROAD_HALF_WIDTH, 0.02 * min(dx, dy))
    shrunk = shapely.buffer(np.array(quads, dtype=object), -half_road, join_style="mitre")
    rings = [_ring_of(p) for p in shrunk]
    angles = rng.normal(0.0, 0.01, len(rings))  # field lines follow the section, ±0.6°
    return rings, angles, ncols


def _carve_towns(
    sections: list[Ring],
    angles: np.ndarray,
    ncols: int,
    n_lots: int,
    lot_area: float,
    rng: np.random.Generator,
) -> tuple[list[tuple[Ring, int, int]], list[tuple[Ring, int]]]:
    """Choose town areas (clusters of neighbouring sections) and carve them out.

    Returns ``(town_regions, field_regions)``: town regions as ``(ring, section, n_lots)``, the
    rest of every section as ``(ring, section)`` for fields.
    """
    if n_lots == 0:
        return [], [(ring, i) for i, ring in enumerate(sections)]
    sec_area = np.array([_ring_area(r) for r in sections])
    capacity = 0.9 * sec_area * _TOWN_BUILT_FRACTION / lot_area  # lots a section can hold
    n_towns = max(1, round(n_lots / 800))
    town_lots = _allocate(n_lots, rng.lognormal(0.0, 0.8, n_towns))
    rows, cols = np.divmod(np.arange(len(sections)), ncols)
    free = np.ones(len(sections), dtype=bool)
    demand: dict[int, int] = {}  # section -> lots
    for lots in town_lots:
        if not free.any():
            break
        centre = int(rng.choice(np.flatnonzero(free)))
        dist = np.hypot(rows - rows[centre], cols - cols[centre])
        left = int(lots)
        for sec in np.argsort(dist, kind="stable"):
            if left == 0:
                break
            if not free[sec]:
                continue
            free[sec] = False
            take = min(left, max(1, math.floor(capacity[sec])))
            demand[int(sec)] = take
            left -= take
        if left:  # out of sections: squeeze the remainder into this town's sections
            taken = list(demand)
            extra = _allocate(left, np.ones(len(taken)))
            for sec, e in zip(taken, extra, strict=True):
                demand[sec] += int(e)

    towns: list[tuple[Ring, int, int]] = []
    fields: list[tuple[Ring, int]] = []
    for i, ring in enumerate(sections):
        lots = demand.get(i, 0)
        if lots == 0:
            fields.append((ring, i))
            continue
        ratio = lots * lot_area / _TOWN_BUILT_FRACTION / sec_area[i]
        if ratio >= 0.8:
            towns.append((ring, i, lots))
            continue
        # Cut a corner of about `ratio` of the section for the town; the rest stays fields.
        f = math.sqrt(ratio)
        a, b = _split_at(ring, angles[i], f, axis=0)
        town, rest = _split_at(a, angles[i], f, axis=1)
        towns.append((town, i, lots))
        fields.extend([(rest, i), (b, i)])
    return towns, fields


# --- convex polygon splitting ---------------------------------------------------------------


def _ring_area(ring: Ring) -> float:
    """Signed shoelace area (positive for counter-clockwise)."""
    s = 0.0
    n = len(ring)
    for i in range(n):
        x0, y0 = ring[i]
        x1, y1 = ring[(i + 1) % n]
        s += x0 * y1 - x1 * y0
    return 0.5 * s


def _as_ring(geom: Ring | BaseGeometry) -> Ring:
    """``geom`` as a ring; only plain (still convex) parcels are lists."""
    if not isinstance(geom, list):
        raise TypeError(f"expected a convex ring, got {type(geom).__name__}")
    return geom


def _ring_of(poly: BaseGeometry) -> Ring:
    """Counter-clockwise, unclosed exterior ring of a polygon."""
    coords = [(float(x), float(y)) for x, y in np.asarray(poly.exterior.coords)[:-1]]
    if _ring_area(coords) < 0:
        coords.reverse()
    return coords


def _cut(ring: Ring, px: float, py: float, dx: float, dy: float) -> tuple[Ring, Ring]:
    """Split a convex ring by the line through ``(px, py)`` with direction ``(dx, dy)``.

    Both halves share the computed intersection points exactly, so they never overlap.
    """
    left: Ring = []
    right: Ring = []
    n = len(ring)
    sides = [dx * (y - py) - dy * (x - px) for x, y in ring]
    for i in range(n):
        a = ring[i]
        sa = sides[i]
        sb = sides[(i + 1) % n]
        if sa >= 0:
            left.append(a)
        if sa <= 0:
            right.append(a)
        if (sa > 0 > sb) or (sa < 0 < sb):
            b = ring[(i + 1) % n]
            t = sa / (sa - sb)
            p = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
            left.append(p)
            right.append(p)
    return left, right


def _extent(ring: Ring, ux: float, uy: float) -> tuple[float, float]:
    """Min and max of the ring projected on the unit vector ``(ux, uy)``."""
    proj = [x * ux + y * uy for x, y in ring]
    return min(proj), max(proj)


def _split_at(
    ring: Ring, angle: float, frac: float, *, axis: int | None = None, tilt: float = 0.0
) -> tuple[Ring, Ring]:
    """Cut ``ring`` across its longer (or the given) axis at ``frac`` of its extent.

    ``angle`` orients the section axes; ``tilt`` rotates the cut line slightly.
    Returns the pieces on the low and the high side of the cut.
    """
    ux, uy = math.cos(angle), math.sin(angle)
    vx, vy = -uy, ux
    u0, u1 = _extent(ring, ux, uy)
    v0, v1 = _extent(ring, vx, vy)
    if axis is None:
        axis = 0 if (u1 - u0) >= (v1 - v0) else 1
    ct, st = math.cos(tilt), math.sin(tilt)
    if axis == 0:  # cut perpendicular to u: line runs along v
        uc, vc = u0 + frac * (u1 - u0), 0.5 * (v0 + v1)
        dx, dy = vx * ct - vy * st, vx * st + vy * ct
    else:
        uc, vc = 0.5 * (u0 + u1), v0 + frac * (v1 - v0)
        dx, dy = ux * ct - uy * st, ux * st + uy * ct
    px, py = uc * ux + vc * vx, uc * uy + vc * vy
    left, right = _cut(ring, px, py, dx, dy)
    # `left` is on the left of the line direction; for axis 0 that is the low-u side.
    if axis == 0:
        return left, right
    return right, left


def _split_ok(ring: Ring, a: Ring, b: Ring) -> bool:
    """Whether a cut produced two proper pieces."""
    if len(a) < 3 or len(b) < 3:
        return False
    total = _ring_area(ring)
    return min(_ring_area(a), _ring_area(b)) > 1e-4 * total


def _random_frac(prng: random.Random) -> float:
    """Where to cut: halves and quarters like real land division, else anywhere in between."""
    r = prng.random()
    if r < 0.45:
        return 0.5 + prng.gauss(0.0, 0.01)
    if r < 0.65:
        return prng.choice((0.25, 0.75)) + prng.gauss(0.0, 0.01)
    return prng.uniform(0.15, 0.85)


def _split_random(ring: Ring, angle: float, prng: random.Random) -> tuple[Ring, Ring]:
    """Cut ``ring`` in two at a random, realistic place; falls back to a straight halving."""
    a, b = _split_at(ring, angle, _random_frac(prng), tilt=prng.gauss(0.0, 0.02))
    if _split_ok(ring, a, b):
        return a, b
    return _split_at(ring, angle, 0.5)


def _subdivide(
    ring: Ring, k: int, angle: float, prng: random.Random, *, heterogeneity: float
) -> list[Ring]:
    """Split a convex ring into ``k`` convex pieces.

    The piece with the largest ``area * factor`` is split next; ``factor`` is lognormal with
    sigma ``heterogeneity`` so some pieces stay large (the long tail) and others split small.
    """
    if k <= 0:
        return []
    heap = [(-_ring_area(ring), 0, ring)]
    counter = 1
    while len(heap) < k:
        _, _, piece = heapq.heappop(heap)
        for part in _split_random(piece, angle, prng):
            prio = -_ring_area(part) * prng.lognormvariate(0.0, heterogeneity)
            heapq.heappush(heap, (prio, counter, part))
            counter += 1
    return [piece for _, _, piece in sorted(heap, key=lambda item: item[1])]


def _town_lots(
    ring: Ring, n_lots: int, angle: float, lot_area: float, prng: random.Random
) -> list[Ring]:
    """Split a town region into street blocks and the blocks into ``n_lots`` lots."""
    n_blocks = max(1, round(n_lots / _LOTS_PER_BLOCK))
    blocks = _subdivide(ring, n_blocks, angle, prng, heterogeneity=0.1)
    shrunk: list[Ring] = []
    for block in blocks:
        poly = Polygon(block)
        smaller = poly.buffer(-_STREET_HALF_WIDTH, join_style="mitre")
        small_enough = smaller.area < 0.5 * poly.area or lot_area < 4 * _STREET_HALF_WIDTH**2
        if isinstance(smaller, Polygon) and not smaller.is_empty and not small_enough:
            shrunk.append(_ring_of(smaller))
        else:
            shrunk.append(block)
    per_block = _allocate(n_lots, np.array([_ring_area(b) for b in shrunk]))
    lots: list[Ring] = []
    for block, k in zip(shrunk, per_block, strict=True):
        lots.extend(_subdivide(block, int(k), angle, prng, heterogeneity=0.25))
    return lots


# --- special cases --------------------------------------------------------------------------


def _add_special_cases(
    geoms: list[Ring | BaseGeometry],
    kinds: list[ParcelKind],
    secs: list[int],
    counts: _Counts,
    rng: np.random.Generator,
    prng: random.Random,
) -> None:
    """Turn some fields into holed, multi, sliver and sub-pixel cases (in place).

    Each case uses its own fields (a field is touched once). Cases that find no suitable field
    are skipped; ``_top_up`` restores the parcel count.
    """
    field_idx = [i for i, k in enumerate(kinds) if k == ParcelKind.FIELD]
    areas = np.array([_ring_area(_as_ring(geoms[i])) for i in field_idx])
    order = [field_idx[j] for j in rng.permutation(len(field_idx))]
    area_of = dict(zip(field_idx, areas.tolist(), strict=True))
    used: set[int] = set()

    def candidates(min_area: float) -> list[int]:
        return [i for i in order if i not in used and area_of[i] >= min_area]

    made = {"holes": 0, "multis": 0, "slivers": 0, "subpixels": 0}
    for i in candidates(8e4):
        if made["holes"] == counts.holes:
            break
        ring = _as_ring(geoms[i])
        farm = _farmstead(ring, prng)
        if farm is None:
            continue
        used.add(i)
        geoms[i] = Polygon([*ring, ring[0]], [[*farm, farm[0]]])
        geoms.append(farm)
        kinds.append(ParcelKind.FARMSTEAD)
        secs.append(secs[i])
        made["holes"] += 1

    for i in candidates(6e4):
        if made["multis"] == counts.multis:
            break
        multi = _split_by_road(_as_ring(geoms[i]), prng)
        if multi is None:
            continue
        used.add(i)
        geoms[i] = multi
        made["multis"] += 1

    for i in candidates(3e4):
        if made["slivers"] == counts.slivers:
            break
        pieces = _cut_sliver(_as_ring(geoms[i]))
        if pieces is None:
            continue
        used.add(i)
        geoms[i], sliver = pieces
        geoms.append(sliver)
        kinds.append(ParcelKind.SLIVER)
        secs.append(secs[i])
        made["slivers"] += 1

    for i in candidates(1e4):
        if made["subpixels"] == counts.subpixels:
            break
        pieces = _cut_subpixel(_as_ring(geoms[i]), prng)
        if pieces is None:
            continue
        used.add(i)
        geoms[i], square = pieces
        geoms.append(square)
        kinds.append(ParcelKind.SUBPIXEL)
        secs.append(secs[i])
        made["subpixels"] += 1
    logger.debug("special cases made: %s (planned %s)", made, counts)


def _farmstead(ring: Ring, prng: random.Random) -> Ring | None:
    """A 0.3–2 ha rectangle strictly inside ``ring`` (at least 15 m from its boundary)."""
    a = prng.uniform(55.0, 140.0)
    b = a * prng.uniform(0.6, 1.0)
    poly = Polygon(ring)
    inner = poly.buffer(-(0.5 * math.hypot(a, b) + 15.0))
    if inner.is_empty:
        return None
    x0, y0, x1, y1 = inner.bounds
    for _ in range(10):
        cx, cy = prng.uniform(x0, x1), prng.uniform(y0, y1)
        if shapely.contains_xy(inner, cx, cy):
            break
    else:
        return None
    # Orient along the field's first edge, give or take a few degrees.
    (ex0, ey0), (ex1, ey1) = ring[0], ring[1]
    theta = math.atan2(ey1 - ey0, ex1 - ex0) + prng.gauss(0.0, 0.05)
    c, s = math.cos(theta), math.sin(theta)
    corners = [(-a / 2, -b / 2), (a / 2, -b / 2), (a / 2, b / 2), (-a / 2, b / 2)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def _split_by_road(ring: Ring, prng: random.Random) -> MultiPolygon | None:
    """The field minus a straight road or a meandering creek crossing it, as a MultiPolygon."""
    poly = Polygon(ring)
    cx, cy = poly.centroid.x, poly.centroid.y
    x0, y0, x1, y1 = poly.bounds
    reach = math.hypot(x1 - x0, y1 - y0)
    creek = prng.random() < 0.5
    for _ in range(3):
        theta = prng.uniform(0.0, math.pi)
        ox = cx + prng.uniform(-0.15, 0.15) * (x1 - x0)
        oy = cy + prng.uniform(-0.15, 0.15) * (y1 - y0)
        c, s = math.cos(theta), math.sin(theta)
        ts = np.linspace(-reach, reach, 13 if creek else 2)
        wiggle = np.array([prng.gauss(0.0, 0.04 * reach) for _ in ts]) if creek else np.zeros(2)
        line = LineString(np.column_stack([ox + ts * c - wiggle * s, oy + ts * s + wiggle * c]))
        strip = line.buffer(prng.uniform(3.0, 7.0), cap_style="flat")
        result = poly.difference(strip)
        if not isinstance(result, MultiPolygon):
            continue
        parts = [p for p in result.geoms if p.area > 0.03 * poly.area]
        if len(parts) >= 2 and len(parts) == len(result.geoms):
            return result
    return None


def _cut_sliver(ring: Ring) -> tuple[Ring, Ring] | None:
    """Cut an 8 m wide strip along the longest edge: ``(rest, sliver)``."""
    n = len(ring)
    lengths = [math.dist(ring[i], ring[(i + 1) % n]) for i in range(n)]
    i = int(np.argmax(lengths))
    if lengths[i] < 150.0:
        return None
    (ax, ay), (bx, by) = ring[i], ring[(i + 1) % n]
    ex, ey = (bx - ax) / lengths[i], (by - ay) / lengths[i]
    nx, ny = -ey, ex  # inward normal of a counter-clockwise ring
    left, right = _cut(ring, ax + _SLIVER_WIDTH * nx, ay + _SLIVER_WIDTH * ny, ex, ey)
    # The edge lies right of the cut line (direction e, normal pointing left/inward).
    sliver, rest = right, left
    if not _split_ok(ring, sliver, rest) or _ring_area(rest) < 4 * _ring_area(sliver):
        return None
    return rest, sliver


def _cut_subpixel(ring: Ring, prng: random.Random) -> tuple[Ring, Ring] | None:
    """Notch a 4–9 m square (< 100 m²) into the middle of an edge: ``(field, square)``."""
    n = len(ring)
    side = prng.uniform(4.0, 9.0)
    edges = [i for i in range(n) if math.dist(ring[i], ring[(i + 1) % n]) > 10 * side]
    if not edges:
        return None
    i = prng.choice(edges)
    (ax, ay), (bx, by) = ring[i], ring[(i + 1) % n]
    length = math.dist((ax, ay), (bx, by))
    ex, ey = (bx - ax) / length, (by - ay) / length
    nx, ny = -ey, ex
    t = prng.uniform(0.3, 0.7) * length
    mx, my = ax + t * ex, ay + t * ey
    h = side / 2
    p0 = (mx - h * ex, my - h * ey)
    p1 = (mx + h * ex, my + h * ey)
    p2 = (p1[0] + side * nx, p1[1] + side * ny)
    p3 = (p0[0] + side * nx, p0[1] + side * ny)
    square = [p0, p1, p2, p3]
    if not Polygon(ring).contains(Polygon(square).buffer(-1e-6)):
        return None
    field = [*ring[: i + 1], p0, p3, p2, p1, *ring[i + 1 :]]
    return field, square


def _top_up(
    geoms: list[Ring | BaseGeometry],
    kinds: list[ParcelKind],
    secs: list[int],
    n: int,
    angles: np.ndarray,
    prng: random.Random,
) -> None:
    """Split the largest plain fields in two until there are exactly ``n`` parcels."""
    missing = wanted = n - len(geoms)
    if missing <= 0:
        return
    plain = [i for i, g in enumerate(geoms) if isinstance(g, list) and kinds[i] == ParcelKind.FIELD]
    plain.sort(key=lambda i: -_ring_area(_as_ring(geoms[i])))
    if len(plain) < missing:
        plain = [i for i, g in enumerate(geoms) if isinstance(g, list)]
        plain.sort(key=lambda i: -_ring_area(_as_ring(geoms[i])))
    heap = [(-_ring_area(_as_ring(geoms[i])), i) for i in plain]
    heapq.heapify(heap)
    while missing > 0 and heap:
        _, i = heapq.heappop(heap)
        ring = _as_ring(geoms[i])
        a, b = _split_at(ring, angles[secs[i]], 0.5)
        geoms[i] = a
        geoms.append(b)
        kinds.append(kinds[i])
        secs.append(secs[i])
        heapq.heappush(heap, (-_ring_area(a), i))
        heapq.heappush(heap, (-_ring_area(b), len(geoms) - 1))
        missing -= 1
    logger.debug("topped up %d of %d missing parcels", wanted - missing, wanted)


# --- output ---------------------------------------------------------------------------------


def _assign_crops(kinds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop class per parcel, by kind: fields mostly corn/soybean, lots and farmsteads built."""
    crops = rng.choice(np.arange(1, 9, dtype=np.int8), size=len(kinds), p=_FIELD_CROP_P)
    built_or_grass = np.where(rng.random(len(kinds)) < 0.85, CropClass.BUILT, CropClass.GRASSLAND)
    grass_or_trees = np.where(rng.random(len(kinds)) < 0.6, CropClass.GRASSLAND, CropClass.FOREST)
    crops = np.where(kinds == ParcelKind.LOT, built_or_grass, crops)
    crops = np.where(kinds == ParcelKind.FARMSTEAD, CropClass.BUILT, crops)
    crops = np.where(kinds == ParcelKind.SUBPIXEL, CropClass.BUILT, crops)
    crops = np.where(kinds == ParcelKind.SLIVER, grass_or_trees, crops)
    return crops.astype(np.int8)


def _to_shapely(geoms: list[Ring | BaseGeometry]) -> np.ndarray:
    """Object array of shapely geometries; plain rings are built in one vectorised call."""
    out = np.empty(len(geoms), dtype=object)
    ring_idx = [i for i, g in enumerate(geoms) if isinstance(g, list)]
    if ring_idx:
        closed = [[*r, r[0]] for r in map(_as_ring, (geoms[i] for i in ring_idx))]
        lengths = np.array([len(r) for r in closed])
        coords = np.array([xy for r in closed for xy in r], dtype=np.float64)
        ring_offsets = np.concatenate([[0], np.cumsum(lengths)])
        geom_offsets = np.arange(len(closed) + 1)
        polys = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, coords, (ring_offsets, geom_offsets)
        )
        out[ring_idx] = polys
    for i, g in enumerate(geoms):
        if not isinstance(g, list):
            out[i] = g
    return out
