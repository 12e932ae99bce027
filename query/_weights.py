"""The weighting raster of exactextract's weighted operations (``weights_band=``).

``weighted_mean``, ``weighted_sum``, ``weighted_stdev``, ``weighted_variance`` and
``weighted_frac`` weigh each pixel by ``c_i * w_i``: ``c_i`` its coverage fraction
(``weights="coverage"``; 1 for a pixel whose centre is inside otherwise) and ``w_i`` the value
of the weighting raster there, as exactextract's ``weights=`` raster:

* the weighting raster is a band of the store, or an expression over bands (in reflectance,
  as every expression), on the value's grid or on a coarser grid of the same CRS whose
  resolution is a whole multiple of it on the same lattice (read by nearest neighbour, as
  exactextract reads a coarser weighting grid);
* a weights layer ingested on one date weighs every date (static weights); otherwise each
  date is weighed by the weights of the same date;
* where the weight is nodata, NaN, not finite (an expression), beyond the weights grid or
  missing on the date, ``default_weight`` is used: NaN by default, so that one such pixel
  makes the parcel's weighted statistics NaN (exactextract's rule); give
  ``default_weight=0`` to leave such pixels out, or 1 to count them unweighted;
* pixels whose *value* is nodata or masked are left out, whatever their weight.

A weights band without a declared nodata has no way to say "no data": its fill value counts
as a weight where no source covers it (ingest weights with a nodata value).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from parcelzarr._catalogue import Catalogue, GridInfo, band_array
from parcelzarr._footprint import valid_mask
from parcelzarr._grid import Tiles
from parcelzarr.errors import BandNotFoundError

from ._mask import MaskCache, MaskSource

__all__ = ["WeightReader", "WeightSource", "check_default_weight", "weight_source",
           "weights_dates", "weights_grid"]

Formula = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class WeightSource:
    """A weighting raster aligned with one grid: per band it reads, the band's array on the
    weights grid (:class:`MaskSource` without classes: same factor, offset and date map for
    every band), its nodata, and how the weight is computed from the bands."""

    layers: Mapping[str, MaskSource]
    nodata: Mapping[str, float | int | None]
    #: Per-pixel weight from the bands' values (in reflectance); None: the one band as stored.
    formula: Formula | None
    #: ``(scale, offset)`` to reflectance per band (expressions only).
    scales: Mapping[str, tuple[float, float]]
    #: The weight of pixels without one (exactextract's ``default_weight``; NaN: none).
    default: float = math.nan


def check_default_weight(value: float | None) -> float:
    """``default_weight=`` as a float (NaN for None: no default, exactextract's rule)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value):
        raise ValueError(f"default_weight={value!r}: give a finite number (or None: pixels "
                         "without a weight make the weighted statistics NaN)")
    return float(value)


def weights_dates(catalogue: Catalogue, inputs: tuple[str, ...]) -> int:
    """The most dates a weights layer reading ``inputs`` holds on one grid (1: static)."""
    return max((sum(all(g.holds(b, t) for b in inputs) for t in range(g.times.size))
                for g in catalogue.holding(inputs)), default=0)


def weight_source(root: zarr.Group, catalogue: Catalogue, info: GridInfo, name: str,
                  inputs: tuple[str, ...], formula: Formula | None,
                  default: float) -> WeightSource:
    """Where the grid ``info`` reads the weights ``name`` (reading the bands ``inputs``):
    the grid of the same CRS holding them on a lattice aligned with ``info``, finest first
    (``info`` itself when it holds them).

    Raises
    ------
    BandNotFoundError
        No such grid (another CRS, a finer or misaligned resolution).
    """
    g, f, offset = weights_grid(catalogue, info, name, inputs)
    tmap = _time_map(info, g, inputs)
    layers = {b: MaskSource(band_array(root, g.name, b).async_array, f, offset, tmap,
                            np.empty(0, np.int64))
              for b in inputs}
    return WeightSource(
        layers=layers, nodata={b: g.bands[b].nodata for b in inputs},
        formula=formula,
        scales={b: (g.bands[b].scale, g.bands[b].offset) for b in inputs},
        default=default)


def weights_grid(catalogue: Catalogue, info: GridInfo, name: str, inputs: tuple[str, ...]
                 ) -> tuple[GridInfo, int, tuple[int, int]]:
    """The grid :func:`weight_source` reads the weights ``name`` from for grid ``info``, with
    the factor and offset of ``info``'s pixels into it (as :func:`._zonal.mask_grid`).

    Raises
    ------
    BandNotFoundError
        No such grid (another CRS, a finer or misaligned resolution).
    """
    s = info.spec
    found = sorted((g for g in catalogue.holding(inputs) if g.spec.crs == s.crs),
                   key=lambda g: (g.name != info.name, g.spec.res_x))
    for g in found:
        m = g.spec
        f = m.res_x / s.res_x
        oy = (m.y0 - s.y0) / s.res_y
        ox = (s.x0 - m.x0) / s.res_x
        if (all(abs(v - round(v)) < 1e-6 for v in (f, oy, ox)) and round(f) >= 1
                and abs(m.res_y / s.res_y - f) < 1e-6):
            return g, round(f), (round(oy), round(ox))
    raise BandNotFoundError(
        f"no grid of {s.crs.to_string()} holding the weights {name!r} aligns with grid "
        f"{info.name}: the weighting raster needs the values' resolution or a whole multiple "
        "of it, on the same lattice")


def _time_map(info: GridInfo, g: GridInfo, bands: Sequence[str]) -> np.ndarray:
    """The weights grid's time index for each date of ``info`` (-1: no weights that date):
    the same date, or the one date of a static weights layer."""
    held = [t for t in range(g.times.size) if all(g.holds(b, t) for b in bands)]
    index = {g.times[t]: t for t in held}
    static = held[0] if len(held) == 1 else -1
    return np.array([index.get(t, static) for t in info.times], dtype=np.int64)


class WeightReader:
    """Reads the weights of band chunk windows, each weights chunk once (per band, the mask
    cache of :mod:`._mask`)."""

    def __init__(self, src: WeightSource, sem: asyncio.Semaphore) -> None:
        self.src = src
        self.caches: dict[str, MaskCache] = {}
        for b, layer in src.layers.items():
            arr = layer.array
            n_cols = Tiles((arr.shape[1], arr.shape[2]), (arr.chunks[1], arr.chunks[2])
                           ).counts[1]
            self.caches[b] = MaskCache(layer, sem, capacity=2 * n_cols + 8)

    async def window(self, win: tuple[int, int, int, int], times: Sequence[int]
                     ) -> dict[int, np.ndarray]:
        """Per band time index of ``times``, the float64 weights of the band window ``win``
        (``default`` where there is none)."""
        src = self.src
        bands = list(src.layers)
        got = await asyncio.gather(*(self.caches[b].layer(win, times) for b in bands))
        inside, ys, xs = got[0][1], got[0][2], got[0][3]
        r0, r1, c0, c1 = win
        out: dict[int, np.ndarray] = {}
        done: dict[int, np.ndarray] = {}
        for t in times:
            if not all(t in g[0] for g in got):
                out[t] = np.full((r1 - r0, c1 - c0), src.default)
                continue
            key = id(got[0][0][t])  # a static layer's block serves every date
            if key not in done:
                done[key] = self._weights({b: g[0][t] for b, g in zip(bands, got, strict=True)},
                                          inside)[np.ix_(ys, xs)]
            out[t] = done[key]
        return out

    def _weights(self, values: Mapping[str, np.ndarray], inside: np.ndarray) -> np.ndarray:
        src = self.src
        ok = inside.copy()
        for b, v in values.items():
            ok &= valid_mask(v, src.nodata[b])
        if src.formula is None:
            w = next(iter(values.values())).astype(np.float64)
        else:
            refl = {b: v.astype(np.float64) * src.scales[b][0] + src.scales[b][1]
                    for b, v in values.items()}
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                w = np.asarray(src.formula(refl), dtype=np.float64)
            w = np.broadcast_to(w, ok.shape).astype(np.float64)
        ok &= np.isfinite(w)
        return np.where(ok, w, src.default)
