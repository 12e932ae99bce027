"""Per-parcel statistics for the baselines (an oracle independent of parcelzarr), and checks.

The baselines read a parcel's bounding window of pixels, mask it with the pixel-centre rule
(``rasterio.features.geometry_mask``, as rasterstats does) and drop nodata (0). Statistics
are ``count``, ``mean`` and population ``std`` in DN, as ``zonal_stats`` returns them.

:func:`compare` checks a result against parcelzarr's, tolerance-aware: rasterising a parcel in
one window (baselines) or chunk by chunk (parcelzarr) can flip a pixel whose centre lies
exactly on an edge, so a few pixel counts may differ by one or two; everything else must agree
to floating-point precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

__all__ = [
    "STATS",
    "Agreement",
    "Window",
    "compare",
    "masked_stats",
    "parcel_mask",
    "parcel_window",
]

STATS = ("count", "mean", "std")
NODATA = 0


@dataclass(frozen=True)
class Window:
    """Pixel rows ``r0:r1`` and columns ``c0:c1`` of a raster."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.r1 - self.r0, self.c1 - self.c0)

    @property
    def empty(self) -> bool:
        """Whether the window holds no pixel."""
        return self.r1 <= self.r0 or self.c1 <= self.c0

    def slices(self) -> tuple[slice, slice]:
        """numpy slices."""
        return slice(self.r0, self.r1), slice(self.c0, self.c1)

    def rasterio(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """rasterio window tuple ``((r0, r1), (c0, c1))``."""
        return ((self.r0, self.r1), (self.c0, self.c1))


def parcel_window(
    bounds: Sequence[float], transform: Affine, width: int, height: int
) -> Window:
    """Pixel window covering ``bounds`` (xmin, ymin, xmax, ymax) of a north-up raster."""
    xmin, ymin, xmax, ymax = bounds
    c0 = math.floor((xmin - transform.c) / transform.a)
    c1 = math.ceil((xmax - transform.c) / transform.a)
    r0 = math.floor((ymax - transform.f) / transform.e)
    r1 = math.ceil((ymin - transform.f) / transform.e)
    return Window(max(r0, 0), min(r1, height), max(c0, 0), min(c1, width))


def parcel_mask(geom: BaseGeometry, transform: Affine, window: Window) -> np.ndarray:
    """Boolean ``window.shape`` array, True where the pixel centre is inside ``geom``."""
    wt = transform @ Affine.translation(window.c0, window.r0)
    return ~geometry_mask([geom], out_shape=window.shape, transform=wt, all_touched=False)


def masked_stats(values: np.ndarray, inside: np.ndarray) -> tuple[int, float, float]:
    """``(count, mean, std)`` of valid (non-nodata) pixels inside the parcel; NaN when none."""
    v = values[inside & (values != NODATA)].astype(np.float64)
    if v.size == 0:
        return 0, math.nan, math.nan
    mean = float(v.mean())
    return int(v.size), mean, float(np.sqrt(np.mean((v - mean) ** 2)))


@dataclass(frozen=True)
class Agreement:
    """How a result compares to the reference on the rows it covers."""

    rows: int
    missing: int
    count_exact: float
    max_count_diff: int
    max_mean_rel: float
    max_std_abs: float
    ok: bool
    message: str


def compare(
    result: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    keys: Sequence[str] = ("parcel_id", "band"),
    min_count_exact: float = 0.99,
    weighted: bool = False,
) -> Agreement:
    """Check ``result`` against ``reference`` on the reference rows of ``result``'s parcels.

    Passes when every such row is present, at least ``min_count_exact`` of the counts are
    identical, no count differs by more than ``2 + 1 %``, and where counts are identical the
    means agree to 1e-6 (relative) and the standard deviations to 1e-4 DN + 1e-6 relative;
    where counts differ, means agree to 2 % + 1 DN. Both NaN (no valid pixel) agrees.

    ``weighted`` (coverage-weighted statistics, fractional counts): every row must agree,
    count and mean to 1e-5 relative, std to 1e-3 DN + 1e-5 relative (exactextract keeps
    coverage fractions as float32).
    """
    keys = list(keys)
    ref = reference[reference["parcel_id"].isin(result["parcel_id"].unique())]
    merged = ref.merge(result, on=keys, how="left", suffixes=("_ref", ""), indicator=True)
    missing = int((merged["_merge"] != "both").sum())
    both = merged[merged["_merge"] == "both"]
    if weighted:
        return _compare_weighted(both, missing)
    c_ref = both["count_ref"].to_numpy(np.int64)
    c = both["count"].to_numpy(np.int64)
    m_ref, m = both["mean_ref"].to_numpy(float), both["mean"].to_numpy(float)
    s_ref, s = both["std_ref"].to_numpy(float), both["std"].to_numpy(float)
    same = c == c_ref
    dcount = np.abs(c - c_ref)
    count_ok = bool(np.all(dcount <= 2 + 0.01 * c_ref))
    both_nan = np.isnan(m_ref) & np.isnan(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rel = np.where(both_nan, 0.0, np.abs(m - m_ref) / np.maximum(np.abs(m_ref), 1.0))
        std_abs = np.where(np.isnan(s_ref) & np.isnan(s), 0.0, np.abs(s - s_ref))
    mean_rel = np.nan_to_num(mean_rel, nan=np.inf)
    std_abs = np.nan_to_num(std_abs, nan=np.inf)
    exact_ok = bool(np.all(mean_rel[same] <= 1e-6)
                    and np.all(std_abs[same] <= 1e-4 + 1e-6 * np.nan_to_num(s_ref[same])))
    loose_ok = bool(np.all(np.abs(m - m_ref)[~same] <= 0.02 * np.abs(m_ref[~same]) + 1.0))
    frac = float(same.mean()) if same.size else 1.0
    ok = missing == 0 and count_ok and exact_ok and loose_ok and frac >= min_count_exact
    message = (
        f"{len(both)} rows, {missing} missing, counts identical {frac:.2%} "
        f"(max diff {int(dcount.max()) if dcount.size else 0}), "
        f"max mean rel diff {float(mean_rel.max()) if mean_rel.size else 0.0:.2e}, "
        f"max std diff {float(std_abs.max()) if std_abs.size else 0.0:.2e}"
    )
    return Agreement(
        rows=len(both), missing=missing, count_exact=frac,
        max_count_diff=int(dcount.max()) if dcount.size else 0,
        max_mean_rel=float(mean_rel.max()) if mean_rel.size else 0.0,
        max_std_abs=float(std_abs.max()) if std_abs.size else 0.0, ok=ok, message=message,
    )  # fmt: skip


def _compare_weighted(both: pd.DataFrame, missing: int) -> Agreement:
    """:func:`compare` for coverage-weighted rows (merged, reference columns ``*_ref``)."""
    diffs = {}
    for name in ("count", "mean", "std"):
        a, b = both[name].to_numpy(float), both[f"{name}_ref"].to_numpy(float)
        scale = np.abs(b) * 1e-5 + (1e-3 if name == "std" else 1e-9)
        nan_ok = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            bad = ~nan_ok & ~(np.abs(a - b) <= scale)
        rel = np.where(nan_ok, 0.0, np.abs(a - b) / np.maximum(np.abs(b), 1.0))
        diffs[name] = (int(bad.sum()), float(np.nan_to_num(rel, nan=np.inf).max())
                       if rel.size else 0.0)
    ok = missing == 0 and all(n == 0 for n, _ in diffs.values())
    message = (f"{len(both)} rows, {missing} missing, coverage-weighted: " + ", ".join(
        f"{name} max rel diff {d:.1e} ({n} outside tolerance)"
        for name, (n, d) in diffs.items()))
    return Agreement(rows=len(both), missing=missing, count_exact=float("nan"),
                     max_count_diff=0, max_mean_rel=diffs["mean"][1],
                     max_std_abs=diffs["std"][1], ok=ok, message=message)
