"""Per-interval composites: group a layer's dates into intervals and merge each interval's
valid observations pixel by pixel (pure).

``interval="1MS", composite="median"`` turns the dates of each output (band, index or
expression) into one layer per calendar month: per pixel, the median of the values observed
that month where they are valid (not nodata, not masked, covered by a source, finite), then
the parcel statistics of that composite. This is Sentinel Hub's ``aggregationInterval`` and
openEO's ``aggregate_temporal_period``. Indices are computed per date, then composited (a
maximum-NDVI composite is the maximum of each date's NDVI).

Intervals are pandas offset aliases (``"1MS"`` month starts, ``"W-MON"``, ``"QS"``, ``"10D"``,
...). Bins are labelled by their start; fixed-length bins (``"10D"``) are counted from
1970-01-01, so a date falls in the same bin whatever else is selected (a re-run over more
dates keeps the labels of the first).
"""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import numpy as np
import pandas as pd

__all__ = ["COMPOSITES", "Composite", "check_composite", "composite_values",
           "interval_labels"]

Composite = Literal["median", "mean", "max", "min"]
#: Pixel-wise composites offered.
COMPOSITES: tuple[str, ...] = get_args(Composite)


def check_composite(interval: str | None, composite: str | None, *,
                    categorical: bool = False) -> tuple[str | None, str | None]:
    """``(interval, composite)`` checked; ``composite`` defaults to ``"median"`` with an
    interval.

    Raises
    ------
    ValueError
        An unknown composite or interval alias, a composite without interval, or an interval
        with ``categorical`` (classes have no pixel-wise median).
    """
    if interval is None:
        if composite is not None:
            raise ValueError(f"composite={composite!r} needs interval= (CLI --interval), e.g. "
                             "interval='1MS' for monthly composites")
        return None, None
    composite = "median" if composite is None else composite
    if composite not in COMPOSITES:
        raise ValueError(f"composite={composite!r}: use one of {', '.join(COMPOSITES)}")
    if categorical:
        raise ValueError("interval= composites values pixel by pixel, which class codes do not "
                         "allow: drop interval= or categorical=True")
    _offset(interval)
    return interval, composite


def _offset(interval: str) -> pd.offsets.BaseOffset:
    if not isinstance(interval, str):
        raise TypeError(f"interval must be a pandas offset alias such as '1MS', got "
                        f"{type(interval).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated aliases still work
            off = pd.tseries.frequencies.to_offset(interval)
    except ValueError:
        off = None
    if off is None or not isinstance(off, pd.offsets.BaseOffset) or off.n <= 0:
        raise ValueError(f"interval={interval!r} is not a time interval: use a pandas offset "
                         "alias such as '1MS' (month starts), 'W-MON', 'QS' or '10D'")
    return off


def interval_labels(times: np.ndarray, interval: str) -> np.ndarray:
    """The start of the ``interval`` bin of each of ``times`` (``datetime64[s]``)."""
    if len(times) == 0:
        return np.asarray(times, dtype="datetime64[s]")
    index = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    series = pd.Series(np.arange(len(index)), index=index)
    labels = np.empty(len(index), dtype="datetime64[ns]")
    off = _offset(interval)
    # fixed-length bins count from 1970-01-01 (calendar ones start on their calendar unit)
    fixed = isinstance(off, (pd.offsets.Tick, pd.offsets.Day))
    grouper = pd.Grouper(freq=off, label="left", closed="left",
                         **({"origin": "epoch"} if fixed else {}))
    for label, group in series.groupby(grouper):
        start = pd.Timestamp(label)  # type: ignore[arg-type]  # a bin's start
        labels[group.to_numpy()] = start.as_unit("ns").to_datetime64()
    return labels.astype("datetime64[s]")


def composite_values(values: np.ndarray, ok: np.ndarray, how: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Merge ``(T, n)`` observations pixel by pixel over their valid ones (``ok``).

    Returns the composite ``(n,)`` (float64; NaN where no observation is valid) and where it
    is valid (at least one valid observation).
    """
    any_ok = np.asarray(ok.any(axis=0), dtype=bool)
    v = np.where(ok, values.astype(np.float64, copy=False), np.nan)
    out = np.full(values.shape[1], np.nan)
    if any_ok.any():
        sub = v[:, any_ok]
        if how == "median":
            out[any_ok] = np.nanmedian(sub, axis=0)
        elif how == "mean":
            out[any_ok] = np.nanmean(sub, axis=0)
        elif how == "max":
            out[any_ok] = np.nanmax(sub, axis=0)
        elif how == "min":
            out[any_ok] = np.nanmin(sub, axis=0)
        else:
            raise ValueError(f"composite {how!r}: use one of {', '.join(COMPOSITES)}")
    return out, any_ok
