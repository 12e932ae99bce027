"""exactextract's operation names beside rasterstats' (pure numpy, no I/O).

exactextract's names are accepted with exactextract's semantics; with
``weights="coverage"`` each pixel counts by the fraction of it inside the parcel, as in
exactextract; without, every pixel whose centre is inside counts 1.

====================== ==========================================================
name                   value
====================== ==========================================================
stdev                  population standard deviation (= ``std``)
variance               population variance (``stdev`` squared)
coefficient_of_variation ``stdev / mean``
quantile_Q             the ``Q`` quantile, ``0 <= Q <= 1`` (``quantile_0.9`` = ``percentile_90``)
majority / minority    the value covering the most / least pixels (coverage-weighted);
                       ties go to the smallest value
variety                how many distinct values the parcel holds (a float: NaN without any)
frac                   per distinct value, its share of the parcel's (coverage-weighted)
                       valid pixels: one row per class, as ``categorical=True``
weighted_sum           ``sum(x_i c_i w_i)``: ``w_i`` the weighting raster
                       (``weights_band=``, :mod:`._weights`), ``c_i`` the coverage
                       fraction (1 with the centre rule)
weighted_mean          ``sum(x_i c_i w_i) / sum(c_i w_i)``
weighted_variance      ``sum(c_i w_i (x_i - m)^2) / sum(c_i w_i)``, ``m`` the weighted mean
weighted_stdev         its square root
weighted_frac          per distinct value, its share of ``sum(c_i w_i)``: one row per class,
                       beside ``frac`` if asked
====================== ==========================================================

As in exactextract, a pixel without a weight (nodata, NaN) takes ``default_weight`` (NaN by
default: the parcel's weighted statistics are then NaN); pixels with weight 0 do not count in
the weighted moments. A parcel without valid pixels has NaN statistics, ``weighted_sum``
included (exactextract gives 0 there, as for ``sum``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

__all__ = ["CLASS_OPS", "DERIVED", "MODES", "QUANTILE", "WEIGHTED", "asks_frac",
           "check_min_coverage_frac", "derived", "quantile_percent", "value_modes"]

#: Statistics computed from the running moments.
DERIVED = ("stdev", "variance", "coefficient_of_variation")
#: Statistics of the distinct values (need the values, like the median).
MODES = ("majority", "minority", "variety")
#: Statistics weighted by the weighting raster (``weights_band=``), one value per parcel.
WEIGHTED = ("weighted_sum", "weighted_mean", "weighted_stdev", "weighted_variance")
#: Statistics with one row per class (distinct value) of the parcel.
CLASS_OPS = ("frac", "weighted_frac")
QUANTILE = re.compile(r"^quantile_((?:0|1)(?:\.\d+)?|\.\d+)$")


def quantile_percent(name: str) -> float | None:
    """``quantile_0.9`` -> 90.0; None for any other name or a quantile outside [0, 1]."""
    m = QUANTILE.match(name)
    if m is None:
        return None
    q = float(m.group(1))
    return q * 100.0 if 0.0 <= q <= 1.0 else None


def derived(name: str, *, mean: np.ndarray, m2: np.ndarray, count: np.ndarray) -> np.ndarray:
    """A :data:`DERIVED` statistic from the running mean, sum of squared deviations ``m2``
    and (weighted) count; NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 0, m2 / count, np.nan)
        if name == "variance":
            return var
        std = np.sqrt(var)
        if name == "stdev":
            return std
        if name == "coefficient_of_variation":
            return std / np.where(count > 0, mean, np.nan)
    raise ValueError(f"not a derived statistic: {name!r}")


def value_modes(parcels: np.ndarray, values: np.ndarray, n: int,
                weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per parcel in ``[0, n)``: majority, minority (by summed weight, or pixel count without
    ``weights``; ties to the smallest value) and variety (distinct values); NaN for parcels
    without values (as every statistic but count).

    Examples
    --------
    >>> value_modes(np.array([0, 0, 0, 1]), np.array([5, 5, 7, 2]), 3)["majority"]
    array([ 5.,  2., nan])
    """
    out = {"majority": np.full(n, np.nan), "minority": np.full(n, np.nan),
           "variety": np.full(n, np.nan)}
    if parcels.size == 0:
        return out
    p = parcels.astype(np.int64, copy=False)
    w = np.ones(p.size) if weights is None else weights.astype(np.float64, copy=False)
    order = np.lexsort((values, p))
    p, v, w = p[order], values[order], w[order]
    first = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (v[1:] != v[:-1])])
    rp, rv, rw = p[first], v[first].astype(np.float64), np.add.reduceat(w, first)
    held = np.unique(rp)
    out["variety"][held] = np.bincount(rp, minlength=n)[held]
    for name, key in (("majority", -rw), ("minority", rw)):
        pick = np.lexsort((rv, key, rp))  # per parcel: best weight, then smallest value
        head = pick[np.r_[True, rp[pick][1:] != rp[pick][:-1]]]
        out[name][rp[head]] = rv[head]
    return out


def check_min_coverage_frac(value: float | None, *, coverage: bool) -> float:
    """Validate ``min_coverage_frac=`` (0 for None): a fraction in (0, 1], with coverage
    weights only (without them a pixel is in or out by its centre)."""
    if value is None:
        return 0.0
    if not coverage:
        raise ValueError(f"min_coverage_frac={value!r} needs weights='coverage' (pixels are "
                         "otherwise in or out of a parcel by their centre)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"min_coverage_frac={value!r}: give a fraction above 0, at most 1")
    return float(value)


def asks_frac(stats: str | Iterable[str]) -> tuple[str, ...]:
    """Which of exactextract's class shares ``stats`` asks for (``frac``, ``weighted_frac``:
    one row per class, as ``categorical=True`` gives them); empty for none. They cannot be
    mixed with other statistics (those have one row per parcel): a ValueError says so."""
    names = ([s.strip() for s in stats.replace(" ", ",").split(",") if s.strip()]
             if isinstance(stats, str) else [str(s) for s in stats])
    asked = tuple(n for n in CLASS_OPS if n in names)
    if not asked:
        return ()
    others = [n for n in names if n not in CLASS_OPS]
    if others:
        verb = "gives" if len(asked) == 1 else "give"
        raise ValueError(f"{' and '.join(asked)} {verb} one row per class and cannot be mixed "
                         f"with {', '.join(others)}: ask for {'it' if len(asked) == 1 else 'them'}"
                         " alone")
    return asked
