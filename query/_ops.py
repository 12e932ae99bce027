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
====================== ==========================================================

``weighted_frac`` needs a weighting raster, which parcelzarr does not take: it is refused
with that reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

__all__ = ["DERIVED", "MODES", "QUANTILE", "asks_frac", "check_min_coverage_frac", "derived",
           "quantile_percent", "value_modes"]

#: Statistics computed from the running moments.
DERIVED = ("stdev", "variance", "coefficient_of_variation")
#: Statistics of the distinct values (need the values, like the median).
MODES = ("majority", "minority", "variety")
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


def asks_frac(stats: str | Iterable[str]) -> bool:
    """Whether ``stats`` asks for exactextract's ``frac`` (class shares: one row per class,
    as ``categorical=True`` gives them). ``frac`` cannot be mixed with other statistics
    (they have one row per parcel, it one per class), and ``weighted_frac`` needs a weighting
    raster: both raise a ValueError saying so."""
    names = ([s.strip() for s in stats.replace(" ", ",").split(",") if s.strip()]
             if isinstance(stats, str) else [str(s) for s in stats])
    if "weighted_frac" in names:
        raise ValueError("weighted_frac weighs by a second raster, which parcelzarr does not "
                         "take: use frac (coverage-weighted with weights='coverage')")
    if "frac" not in names:
        return False
    if set(names) != {"frac"}:
        raise ValueError("frac gives one row per class and cannot be mixed with "
                         f"{', '.join(n for n in names if n != 'frac')}: ask for it alone")
    return True
