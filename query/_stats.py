"""Statistic names and per-parcel reductions (pure numpy, no I/O).

Reductions are streaming where they can be: per chunk, each parcel's pixels give a partial
(count, sum, mean, M2, min, max, nodata), combined across chunks with Chan's parallel update,
so ``std`` stays accurate for any dtype. ``median`` and ``percentile_N`` need the values: they
are gathered per parcel and reduced exactly once a parcel's last chunk has been read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ._ops import DERIVED, MODES, WEIGHTED, derived, quantile_percent, value_modes

__all__ = [
    "DEFAULT_STATS",
    "Partials",
    "StatSpec",
    "exact_stats",
    "parse_stats",
    "weighted_quantiles",
]

DEFAULT_STATS = ("count", "mean", "std", "min", "max", "median")
_SIMPLE = ("count", "sum", "mean", "min", "max", "std", "median", "nodata", "range")
_PERCENTILE = re.compile(r"^percentile_(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class StatSpec:
    """A validated list of statistics, in the order asked."""

    names: tuple[str, ...]

    @property
    def percentiles(self) -> tuple[float, ...]:
        """Percentiles asked for, as ``percentile_N`` or exactextract's ``quantile_Q``."""
        out = []
        for n in self.names:
            if m := _PERCENTILE.match(n):
                out.append(float(m.group(1)))
            elif (q := quantile_percent(n)) is not None:
                out.append(q)
        return tuple(dict.fromkeys(out))

    @property
    def modes(self) -> bool:
        """Whether majority, minority or variety is asked for."""
        return any(n in MODES for n in self.names)

    @property
    def weighted(self) -> bool:
        """Whether a statistic weighted by the weighting raster is asked for."""
        return any(n in WEIGHTED for n in self.names)

    @property
    def needs_values(self) -> bool:
        """Whether statistics of the values themselves (median, percentiles, majority,
        minority, variety) are asked for."""
        return "median" in self.names or bool(self.percentiles) or self.modes

    @property
    def exact_names(self) -> list[str]:
        """The names :func:`exact_stats` gives for this spec."""
        names = ["median"] if "median" in self.names else []
        names += [f"percentile_{q:g}" for q in self.percentiles]
        return names + (list(MODES) if self.modes else [])

    @staticmethod
    def source(name: str) -> str:
        """Where a statistic asked for by ``name`` is computed: ``quantile_0.9`` is
        ``percentile_90``; other names are themselves."""
        q = quantile_percent(name)
        return name if q is None else f"percentile_{q:g}"


def parse_stats(stats: str | Iterable[str]) -> StatSpec:
    """Validate statistic names: rasterstats' (count, sum, mean, min, max, std, median,
    range, nodata, percentile_N) and exactextract's (stdev, variance,
    coefficient_of_variation, majority, minority, variety, quantile_Q, weighted_sum,
    weighted_mean, weighted_stdev, weighted_variance; see :mod:`parcelzarr.query._ops`).

    Examples
    --------
    >>> parse_stats("count,mean,percentile_90").names
    ('count', 'mean', 'percentile_90')
    """
    if isinstance(stats, str):
        stats = [s.strip() for s in stats.replace(" ", ",").split(",") if s.strip()]
    names = tuple(dict.fromkeys(str(s) for s in stats))
    if not names:
        raise ValueError("no statistics requested")
    for n in names:
        if (n in _SIMPLE or n in DERIVED or n in MODES or n in WEIGHTED
                or quantile_percent(n) is not None):
            continue
        m = _PERCENTILE.match(n)
        if m is None or not 0 <= float(m.group(1)) <= 100:
            known = ", ".join(_SIMPLE + DERIVED + MODES + WEIGHTED)
            raise ValueError(
                f"unknown statistic {n!r}: choose from {known}, "
                "percentile_N (0 <= N <= 100) or quantile_Q (0 <= Q <= 1)"
            )
    return StatSpec(names)


class Partials:
    """Running per-parcel statistics of one layer (a band or index at one date)."""

    def __init__(self, n: int, *, weighted: bool = False, extrema: bool = True,
                 raster_weights: bool = False) -> None:
        self.weighted = weighted
        #: whether min and max are kept (two of the reductions per chunk; off when neither
        #: they nor ``range`` is asked for)
        self.extrema = extrema
        self.count = np.zeros(n, dtype=np.float64 if weighted else np.int64)
        self.sum = np.zeros(n, dtype=np.float64)
        self.mean = np.zeros(n, dtype=np.float64)
        self.m2 = np.zeros(n, dtype=np.float64)
        self.min = np.full(n, np.inf, dtype=np.float64)
        self.max = np.full(n, -np.inf, dtype=np.float64)
        self.nodata = np.zeros(n, dtype=np.float64 if weighted else np.int64)
        #: Moments weighted by ``c_i w_i`` (the weighting raster's ``weighted_*``), if asked.
        self.w: _Moments | None = _Moments(n) if raster_weights else None

    def add_sorted(self, parcels: np.ndarray, values: np.ndarray,
                   weights: np.ndarray | None = None) -> None:
        """Add valid pixels, ``parcels`` sorted ascending (values grouped by parcel).

        With ``weights`` (coverage fractions) count, sum, mean and std are weighted as
        exactextract's: count = sum(w), sum = sum(w v), std = sqrt(sum(w (v - mean)^2) / sum(w)).
        """
        if parcels.size == 0:
            return
        starts, ids, runs = _runs(parcels)
        v = values.astype(np.float64, copy=False)
        if weights is None:
            cnt = runs
            s = np.add.reduceat(v, starts)
            mu = s / cnt
            dev = v - np.repeat(mu, runs)
            m2 = np.add.reduceat(np.multiply(dev, dev, out=dev), starts)
        else:
            cnt = np.add.reduceat(weights, starts)
            s = np.add.reduceat(v * weights, starts)
            mu = s / cnt
            dev = v - np.repeat(mu, runs)
            m2 = np.add.reduceat(weights * dev * dev, starts)
        _merge(self.mean, self.m2, self.count[ids].astype(np.float64), ids, cnt, mu, m2)
        self.count[ids] += cnt
        self.sum[ids] += s
        if self.extrema:
            # ids are unique here: plain fancy assignment is exact
            self.min[ids] = np.minimum(self.min[ids], np.minimum.reduceat(v, starts))
            self.max[ids] = np.maximum(self.max[ids], np.maximum.reduceat(v, starts))

    def add_weighted(self, parcels: np.ndarray, values: np.ndarray, cw: np.ndarray) -> None:
        """Add valid pixels to the raster-weighted moments, ``parcels`` sorted ascending and
        ``cw`` each pixel's coverage times weight (NaN for a missing weight)."""
        if self.w is not None:
            self.w.add_sorted(parcels, values, cw)

    def add_nodata(self, parcels: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count nodata pixels inside parcels (coverage-weighted with ``weights``)."""
        if parcels.size:
            self.nodata += np.bincount(parcels, weights=weights, minlength=self.nodata.size
                                       ).astype(self.nodata.dtype)

    def result(self, spec: StatSpec, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics for parcels ``ids`` (NaN where a parcel has no valid pixel)."""
        if not self.extrema and {"min", "max", "range"} & set(spec.names):
            raise ValueError("min, max and range need Partials(extrema=True)")
        cnt = self.count[ids]
        empty = cnt == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out: dict[str, np.ndarray] = {}
            for name in spec.names:
                if name == "count":
                    out[name] = cnt.copy()
                elif name == "nodata":
                    out[name] = self.nodata[ids].copy()
                elif name == "sum":
                    out[name] = np.where(empty, np.nan, self.sum[ids])
                elif name == "mean":
                    out[name] = np.where(empty, np.nan, self.sum[ids] / cnt)
                elif name == "std":
                    out[name] = np.where(empty, np.nan, np.sqrt(self.m2[ids] / cnt))
                elif name == "min":
                    out[name] = np.where(empty, np.nan, self.min[ids])
                elif name == "max":
                    out[name] = np.where(empty, np.nan, self.max[ids])
                elif name == "range":
                    out[name] = np.where(empty, np.nan, self.max[ids] - self.min[ids])
                elif name in DERIVED:
                    out[name] = derived(name, mean=self.sum[ids] / np.where(empty, 1, cnt),
                                        m2=self.m2[ids], count=cnt)
                elif name in WEIGHTED and self.w is not None:
                    out[name] = np.where(empty, np.nan, self.w.result(name, ids))
        return out


def _runs(parcels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of parcel indices sorted ascending: where each parcel's run starts, the parcels, and
    the runs' lengths."""
    first = np.empty(parcels.size, dtype=bool)
    first[0] = True
    np.not_equal(parcels[1:], parcels[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return starts, parcels[starts], np.diff(starts, append=parcels.size)


def _merge(mean: np.ndarray, m2: np.ndarray, n_a: np.ndarray, ids: np.ndarray,
           cnt: np.ndarray, mu: np.ndarray, m2_b: np.ndarray) -> None:
    """Chan's parallel update, in place: the running ``mean`` and ``m2`` of parcels ``ids``
    (count ``n_a`` so far) take a partial of count ``cnt``, mean ``mu`` and ``m2_b``."""
    n_ab = n_a + cnt
    delta = mu - mean[ids]
    mean[ids] += delta * cnt / n_ab
    m2[ids] += m2_b + delta * delta * n_a * cnt / n_ab


class _Moments:
    """Running per-parcel moments of values under arbitrary weights ``c_i w_i``, with
    exactextract's rules: a NaN weight makes the parcel's moments NaN, a weight 0 adds
    nothing (West's update skips it), a parcel whose weights sum to 0 has NaN mean and
    variance."""

    def __init__(self, n: int) -> None:
        self.count = np.zeros(n)  # sum(c w)
        self.sum = np.zeros(n)  # sum(x c w)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)  # sum(c w (x - mean)^2)

    def add_sorted(self, parcels: np.ndarray, values: np.ndarray, cw: np.ndarray) -> None:
        """Add pixels (``parcels`` sorted ascending) of weights ``cw``: Chan's parallel
        update, as :meth:`Partials.add_sorted`."""
        if parcels.size == 0:
            return
        starts, ids, runs = _runs(parcels)
        v = values.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            cnt = np.add.reduceat(cw, starts)
            s = np.add.reduceat(v * cw, starts)
            self.sum[ids] += s
            use = cnt != 0  # True for NaN: a missing weight spoils the parcel's moments
            mu = s / np.where(use, cnt, 1.0)
            dev = v - np.repeat(mu, runs)
            m2 = np.add.reduceat(cw * dev * dev, starts)
            ids, cnt, mu, m2 = ids[use], cnt[use], mu[use], m2[use]
            _merge(self.mean, self.m2, self.count[ids], ids, cnt, mu, m2)
            self.count[ids] += cnt

    def result(self, name: str, ids: np.ndarray) -> np.ndarray:
        cnt = self.count[ids]
        with np.errstate(invalid="ignore", divide="ignore"):
            if name == "weighted_sum":
                return self.sum[ids].copy()
            if name == "weighted_mean":
                return np.where(cnt != 0, self.sum[ids] / cnt, np.nan)
            var = np.where(cnt != 0, self.m2[ids] / cnt, np.nan)
            if name == "weighted_variance":
                return var
            if name == "weighted_stdev":
                return np.sqrt(var)
        raise ValueError(f"not a weighted statistic: {name!r}")


def _sort_by_parcel_value(parcels: np.ndarray, values: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``(parcels, values)`` sorted by parcel then value.

    Integer and float32 values are packed with the parcel into one int64 key and sorted with
    a single ``np.sort`` (several times faster than ``lexsort``); other values use ``lexsort``.
    """
    p = parcels.astype(np.int64, copy=False)
    if p.size and int(p.max()) < 2**31:
        if values.dtype.kind in "ui":
            vmin = int(values.min())
            if int(values.max()) - vmin < 2**32:
                key = values.astype(np.int64)
                key -= vmin
                key |= p << 32
                key.sort()
                return key >> 32, (key & 0xFFFFFFFF) + vmin
        elif values.dtype == np.float32:
            bits = values.view(np.uint32).astype(np.int64)
            neg = bits >= 2**31
            # order-preserving map of float32 bit patterns onto [0, 2**32)
            mapped = np.where(neg, 2**32 - 1 - bits, bits + 2**31)
            key = (p << 32) | mapped
            key.sort()
            m = key & 0xFFFFFFFF
            back = np.where(m >= 2**31, m - 2**31, 2**32 - 1 - m).astype(np.uint32)
            return key >> 32, back.view(np.float32)
    order = np.lexsort((values, p))
    return p[order], values[order]


#: Parcels with more distinct values than this get their running sums one by one
#: (:func:`_running_before`); shorter ones position by position, all at once.
_SHORT_RUN = 32


def _running_before(w: np.ndarray, starts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per element, the sum of the weights before it in its parcel (segments of lengths
    ``m`` at ``starts``), added left to right from 0 within the parcel.

    A global ``cumsum`` minus its value at each parcel's start would round differently with
    the parcels before it: a parcel's quantiles would then depend on which other parcels
    share its batch (another chunk order, another Dask partition). Summed per parcel they
    are the same, bit for bit, in any batch.
    """
    out = np.empty(w.size, dtype=np.float64)
    if w.size == 0:
        return out
    short = np.flatnonzero(m <= _SHORT_RUN)
    acc = np.zeros(short.size)
    for i in range(int(m[short].max()) if short.size else 0):
        live = m[short] > i
        at = starts[short[live]] + i
        out[at] = acc[live]
        acc[live] += w[at]
    for j in np.flatnonzero(m > _SHORT_RUN):
        a, b = starts[j], starts[j] + m[j]
        out[a] = 0.0
        np.cumsum(w[a:b - 1], out=out[a + 1:b])
    return out


def weighted_quantiles(
    parcels: np.ndarray, values: np.ndarray, weights: np.ndarray, n: int,
    qs: Sequence[float],
) -> list[np.ndarray]:
    """Coverage-weighted quantiles per parcel, with exactextract's definition.

    Per parcel, equal values are merged (their weights summed); with the ``m`` distinct values
    ``x_i`` ascending, weights ``w_i`` and cumulative weights ``C_i``, the points
    ``s_i = i w_i + (m - 1) C_{i-1}`` are interpolated linearly at ``q (m - 1) sum(w)``
    (the weighted generalisation of the 'linear' rule; equal weights give numpy's result).
    """
    order = np.lexsort((values, parcels))
    p, v, w = parcels[order], values[order].astype(np.float64), weights[order]
    out = [np.full(n, np.nan) for _ in qs]
    if p.size == 0:
        return out
    new = np.r_[True, (p[1:] != p[:-1]) | (v[1:] != v[:-1])]
    first = np.flatnonzero(new)
    p, v, w = p[first], v[first], np.add.reduceat(w, first)
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    ids = p[starts]
    m = np.diff(np.r_[starts, p.size])
    rep = np.repeat(np.arange(starts.size), m)
    i = np.arange(p.size) - starts[rep]
    before = _running_before(w, starts, m)                 # C_{i-1} in the parcel
    total = np.add.reduceat(w, starts)
    s = i * w + (m[rep] - 1) * before
    for k, q in enumerate(qs):
        target = q / 100.0 * total * (m - 1)
        right = np.add.reduceat((s <= target[rep]).astype(np.int64), starts)
        left = np.clip(right - 1, 0, m - 1)
        r = np.clip(right, 0, m - 1)
        xl, xr = v[starts + left], v[starts + r]
        sl, sr = s[starts + left], s[starts + r]
        with np.errstate(invalid="ignore", divide="ignore"):
            mid = xl + (target - sl) * (xr - xl) / (sr - sl)
        res = np.where(right == 0, v[starts], np.where(right >= m, v[starts + m - 1], mid))
        out[k][ids] = res
    return out


def exact_stats(
    parcels: np.ndarray, values: np.ndarray, n: int, percentiles: Sequence[float],
    *, median: bool, weights: np.ndarray | None = None, modes: bool = False,
) -> dict[str, np.ndarray]:
    """Exact median and percentiles per parcel (numpy's 'linear' rule, as rasterstats; with
    ``weights``, exactextract's coverage-weighted rule, see :func:`weighted_quantiles`).

    ``parcels`` are parcel indices in ``[0, n)``; the result arrays have length ``n`` with NaN
    for parcels without values. ``modes`` adds majority, minority and variety
    (:func:`~parcelzarr.query._ops.value_modes`).
    """
    extra = value_modes(parcels, values, n, weights) if modes else {}
    if weights is not None:
        names = (["median"] if median else []) + [f"percentile_{q:g}" for q in percentiles]
        qs = ([50.0] if median else []) + list(percentiles)
        return dict(zip(names, weighted_quantiles(parcels, values, weights, n, qs),
                        strict=True)) | extra
    p, v = _sort_by_parcel_value(parcels, values)
    cnt = np.bincount(p, minlength=n)
    start = np.r_[0, np.cumsum(cnt)[:-1]]
    has = cnt > 0
    out: dict[str, np.ndarray] = {}

    def quantile(q: float) -> np.ndarray:
        res = np.full(n, np.nan)
        pos = (cnt[has] - 1) * (q / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, cnt[has] - 1)
        frac = pos - lo
        a = v[start[has] + lo].astype(np.float64)
        b = v[start[has] + hi].astype(np.float64)
        res[has] = a + (b - a) * frac
        return res

    if median:
        out["median"] = quantile(50.0)
    for q in percentiles:
        out[f"percentile_{q:g}"] = quantile(q)
    return out | extra
