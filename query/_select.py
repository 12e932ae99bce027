"""Select bands and dates of a store (pure helpers over the store's catalogue)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from parcelzarr.errors import BandNotFoundError

__all__ = ["TimeSelection", "normalise_bands", "select_times"]

TimeSelection = str | date | datetime | np.datetime64 | slice | Sequence[str] | None


@dataclass(frozen=True)
class _Range:
    start: np.datetime64 | None
    end: np.datetime64 | None  # inclusive: whole day when given as a date


def _day_bounds(value: object, *, end: bool) -> np.datetime64 | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return np.datetime64(value.replace(tzinfo=None), "s")
    text = str(value)
    if len(text) == 10:  # a date: from its start, or to its end
        day = np.datetime64(text, "D")
        return (day + np.timedelta64(1, "D") - np.timedelta64(1, "s")).astype(
            "datetime64[s]"
        ) if end else day.astype("datetime64[s]")
    return np.datetime64(text.replace("Z", ""), "s")


def select_times(times: np.ndarray, time: TimeSelection) -> np.ndarray:
    """Indices of ``times`` (datetime64) selected by ``time``.

    ``None``: all; a date ``"2024-06-15"``: every acquisition of that day; a datetime: exactly
    it; ``"START/END"`` or ``slice(start, end)``: an inclusive range (either end may be open);
    a list: the union.
    """
    times = times.astype("datetime64[s]")
    if time is None:
        return np.arange(times.size)
    if isinstance(time, (list, tuple)):
        parts = [select_times(times, t) for t in time]
        return np.unique(np.concatenate(parts)) if parts else np.arange(0)
    if isinstance(time, slice):
        rng = _Range(_day_bounds(time.start, end=False), _day_bounds(time.stop, end=True))
    elif isinstance(time, str) and "/" in time:
        a, b = time.split("/", 1)
        rng = _Range(_day_bounds(a, end=False), _day_bounds(b, end=True))
    else:
        if isinstance(time, np.datetime64):
            time = str(time.astype("datetime64[s]"))
        rng = _Range(_day_bounds(time, end=False), _day_bounds(time, end=True))
        if isinstance(time, datetime) or (isinstance(time, str) and len(time) > 10):
            rng = _Range(rng.start, rng.start)
    sel = np.ones(times.size, dtype=bool)
    if rng.start is not None:
        sel &= times >= rng.start
    if rng.end is not None:
        sel &= times <= rng.end
    return np.flatnonzero(sel)


def normalise_bands(bands: str | Iterable[str] | None, available: Sequence[str]) -> list[str]:
    """Requested bands, validated against ``available`` (all of them when None)."""
    if bands is None:
        return list(available)
    if isinstance(bands, str):
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    out = list(dict.fromkeys(bands))
    missing = [b for b in out if b not in available]
    if missing:
        raise BandNotFoundError(
            f"band(s) {missing} not in the store; it holds {sorted(available)}"
        )
    return out
