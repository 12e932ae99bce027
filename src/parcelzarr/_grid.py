"""Pixel grids: pure geometry of a store's (CRS, resolution) grids and their chunk lattice.

Every grid's chunk boundaries lie on a lattice fixed by the CRS, the resolution, the pixel phase
and the chunk shape, independent of which tiles were ingested first. Two tiles of one UTM zone
therefore share chunk boundaries, and a grid that grows keeps its existing chunks where they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS

__all__ = ["GridSpec", "Tiles", "crs_slug", "res_label"]

_EPS = 1e-6  # fraction of a pixel treated as alignment noise


def crs_slug(crs: CRS) -> str:
    """A short, stable, path-safe name for a CRS: ``utm16n``, ``epsg5070``, ``epsg4326``."""
    code = crs.to_epsg(min_confidence=90)
    if code is not None and (32601 <= code <= 32660 or 32701 <= code <= 32760):
        zone, hemi = code % 100, "n" if code < 32700 else "s"
        return f"utm{zone:02d}{hemi}"
    if code is not None:
        return f"epsg{code}"
    import hashlib

    return "crs" + hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:8]


def res_label(res: float, *, geographic: bool) -> str:
    """A path-safe label for a resolution: ``10m``, ``9p995m``, ``0p3arcsec``."""
    if geographic:
        value, unit = res * 3600.0, "arcsec"
    else:
        value, unit = res, "m"
    text = f"{round(value, 6):g}".replace(".", "p").replace("-", "m")
    return f"{text}{unit}"


def _floor(v: float) -> int:
    return math.floor(v + _EPS)


def _ceil(v: float) -> int:
    return math.ceil(v - _EPS)


def _pixel_phase(coord: float, res: float) -> float:
    """``coord`` modulo ``res``, snapped to 0 when within alignment noise of a multiple."""
    frac = coord / res - math.floor(coord / res)
    if frac < _EPS or frac > 1 - _EPS:
        return 0.0
    return frac * res


@dataclass(frozen=True)
class Tiles:
    """A ``(height, width)`` pixel array cut into ``(chunk_y, chunk_x)`` chunks: the chunk
    and window arithmetic of grids, arrays and queries in one place (in the spirit of
    odc-geo's ``GeoboxTiles``). Windows are ``(row0, row1, col0, col1)``, ends exclusive.

    >>> t = Tiles((600, 500), (256, 256))
    >>> t.counts, t.chunk_window(2, 1)
    ((3, 2), (512, 600, 256, 500))
    >>> t.chunk_span((250, 260, 0, 10))
    (range(0, 2), range(0, 1))
    """

    shape: tuple[int, int]
    chunk: tuple[int, int]

    @property
    def counts(self) -> tuple[int, int]:
        """Number of chunk rows and columns (the last ones may be partial)."""
        return (-(-self.shape[0] // self.chunk[0]), -(-self.shape[1] // self.chunk[1]))

    def chunk_window(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        """The pixels of chunk ``(cy, cx)``, clipped to the array."""
        ch, cw = self.chunk
        return (cy * ch, min(self.shape[0], (cy + 1) * ch),
                cx * cw, min(self.shape[1], (cx + 1) * cw))

    def chunk_span(self, window: tuple[int, int, int, int]) -> tuple[range, range]:
        """Chunk rows and columns a non-empty pixel window touches."""
        r0, r1, c0, c1 = window
        ch, cw = self.chunk
        return range(r0 // ch, (r1 - 1) // ch + 1), range(c0 // cw, (c1 - 1) // cw + 1)

    def chunk_spans(self, windows: np.ndarray) -> np.ndarray:
        """:meth:`chunk_span` of many windows at once: ``(n, 4)`` windows in, ``(n, 4)`` first
        and last (inclusive) chunk row and column out."""
        ch, cw = self.chunk
        w = np.asarray(windows)
        return np.stack([w[:, 0] // ch, (w[:, 1] - 1) // ch,
                         w[:, 2] // cw, (w[:, 3] - 1) // cw], axis=1)

    def overlap(self, window: tuple[int, int, int, int], cy: int, cx: int
                ) -> tuple[int, int, int, int]:
        """The part of ``window`` inside chunk ``(cy, cx)``, in array pixels."""
        r0, r1, c0, c1 = window
        ya, yb, xa, xb = self.chunk_window(cy, cx)
        return (max(r0, ya), min(r1, yb), max(c0, xa), min(c1, xb))


@dataclass(frozen=True)
class GridSpec:
    """A north-up pixel grid with a chunk lattice.

    Attributes
    ----------
    crs_wkt:
        The grid's CRS as WKT.
    res_x, res_y:
        Pixel width and height in CRS units (both positive; rows go south).
    x0, y0:
        Top-left corner of pixel (0, 0); always on the chunk lattice.
    width, height:
        Size in pixels.
    chunk_y, chunk_x:
        Chunk shape in pixels.
    """

    crs_wkt: str
    res_x: float
    res_y: float
    x0: float
    y0: float
    width: int
    height: int
    chunk_y: int = 256
    chunk_x: int = 256

    @cached_property
    def crs(self) -> CRS:
        """The grid's CRS."""
        return CRS.from_wkt(self.crs_wkt)

    @property
    def name(self) -> str:
        """Group name of the grid in a store, e.g. ``utm16n/10m``."""
        return f"{crs_slug(self.crs)}/{res_label(self.res_x, geographic=self.crs.is_geographic)}"

    @property
    def transform(self) -> Affine:
        """Affine transform of pixel (col, row) corners to CRS coordinates."""
        return Affine(self.res_x, 0.0, self.x0, 0.0, -self.res_y, self.y0)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return (
            self.x0,
            self.y0 - self.height * self.res_y,
            self.x0 + self.width * self.res_x,
            self.y0,
        )

    @property
    def tiles(self) -> Tiles:
        """The grid's chunk lattice (chunk and window arithmetic)."""
        return Tiles(self.shape, (self.chunk_y, self.chunk_x))

    @property
    def chunk_counts(self) -> tuple[int, int]:
        """Number of chunk rows and columns."""
        return self.tiles.counts

    def same_lattice(self, other: GridSpec) -> bool:
        """Whether ``other`` has this grid's CRS, resolution, pixel phase and chunk shape."""
        if (self.chunk_y, self.chunk_x) != (other.chunk_y, other.chunk_x):
            return False
        if not math.isclose(self.res_x, other.res_x, rel_tol=1e-9) or not math.isclose(
            self.res_y, other.res_y, rel_tol=1e-9
        ):
            return False
        if self.crs != other.crs:
            return False
        dx = (other.x0 - self.x0) / (self.res_x * self.chunk_x)
        dy = (self.y0 - other.y0) / (self.res_y * self.chunk_y)
        return abs(dx - round(dx)) < _EPS and abs(dy - round(dy)) < _EPS

    @classmethod
    def covering(
        cls,
        crs_wkt: str,
        res_x: float,
        res_y: float,
        bounds: tuple[float, float, float, float],
        *,
        phase_x: float,
        phase_y: float,
        chunk_y: int = 256,
        chunk_x: int = 256,
    ) -> GridSpec:
        """The smallest lattice-aligned grid covering ``bounds``.

        ``phase_x``/``phase_y`` are any pixel corner coordinates of the source grid (e.g. a
        tile's top-left corner): grid pixels pass through it, so source pixels map to grid
        pixels one to one without resampling. Chunk boundaries sit at ``phase + k * chunk *
        res`` with ``phase`` reduced modulo one *pixel*: the lattice depends only on the CRS,
        the resolution, the pixel phase and the chunk shape, never on which tile came first.
        """
        left, bottom, right, top = bounds
        step_x, step_y = res_x * chunk_x, res_y * chunk_y
        ox = _pixel_phase(phase_x, res_x)
        oy = _pixel_phase(phase_y, res_y)
        x0 = ox + _floor((left - ox) / step_x) * step_x
        y0 = oy + _ceil((top - oy) / step_y) * step_y
        # Express the origin as the source corner plus a whole number of pixels, so that grid
        # pixel edges reproduce the source's own coordinates to the last bit where possible
        # (pixel centres lying exactly on a parcel edge then fall as they do in the source).
        x0 = phase_x + round((x0 - phase_x) / res_x) * res_x
        y0 = phase_y + round((y0 - phase_y) / res_y) * res_y
        width = _ceil((right - x0) / res_x)
        height = _ceil((y0 - bottom) / res_y)
        return cls(crs_wkt, res_x, res_y, x0, y0, width, height, chunk_y, chunk_x)

    def union(self, other: GridSpec) -> GridSpec:
        """The lattice-aligned grid covering both (which must share a lattice)."""
        if not self.same_lattice(other):
            raise ValueError("grids do not share a pixel lattice")
        left = min(self.bounds[0], other.bounds[0])
        top = max(self.bounds[3], other.bounds[3])
        right = max(self.bounds[2], other.bounds[2])
        bottom = min(self.bounds[1], other.bounds[1])
        x0 = self.x0 + round((left - self.x0) / self.res_x) * self.res_x
        y0 = self.y0 + round((top - self.y0) / self.res_y) * self.res_y
        return replace(
            self,
            x0=x0,
            y0=y0,
            width=_ceil((right - x0) / self.res_x),
            height=_ceil((y0 - bottom) / self.res_y),
        )

    def offset_of(self, other: GridSpec) -> tuple[int, int]:
        """(row, col) of ``other``'s pixel (0, 0) in this grid (same lattice)."""
        return (
            round((self.y0 - other.y0) / self.res_y),
            round((other.x0 - self.x0) / self.res_x),
        )

    def pixel_window(
        self, bounds: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of pixels whose area meets ``bounds``, clipped to the grid."""
        left, bottom, right, top = bounds
        col0 = max(0, _floor((left - self.x0) / self.res_x))
        col1 = min(self.width, _ceil((right - self.x0) / self.res_x))
        row0 = max(0, _floor((self.y0 - top) / self.res_y))
        row1 = min(self.height, _ceil((self.y0 - bottom) / self.res_y))
        return row0, max(row0, row1), col0, max(col0, col1)

    def x_coords(self) -> list[float]:
        """Pixel-centre x coordinates."""
        return [self.x0 + (i + 0.5) * self.res_x for i in range(self.width)]

    def y_coords(self) -> list[float]:
        """Pixel-centre y coordinates (descending)."""
        return [self.y0 - (i + 0.5) * self.res_y for i in range(self.height)]
