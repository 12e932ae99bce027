"""Select bands and dates of a store (pure helpers over the store's catalogue)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from parcelzarr._dates import parse_time
from parcelzarr.errors import BandNotFoundError

__all__ = ["TimeSelection", "describe_times", "normalise_bands", "select_times"]

TimeSelection = str | int | date | datetime | np.datetime64 | slice | Sequence[str] | None


@dataclass(frozen=True)
class _Range:
    start: np.datetime64 | None
    end: np.datetime64 | None  # inclusive: whole day when given as a date


_PERIOD = re.compile(r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$")


def _period(text: str) -> tuple[np.datetime64, np.datetime64]:
    """First and last second of a year (``2021``), month (``2021-05``) or day (``2021-05-03``)."""
    try:
        start = np.datetime64(text)  # its unit (Y, M or D) is the period
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: {_FORMS}") from None
    end = (start + 1).astype("datetime64[s]") - np.timedelta64(1, "s")
    return start.astype("datetime64[s]"), end


def _bound(value: object, *, end: bool) -> np.datetime64 | None:
    """One end of a range: a period's first second (start) or last second (end), or an
    exact instant (a datetime, or an ISO string with a time of day)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return np.datetime64(parse_time(value), "s")
    if isinstance(value, date):
        value = value.isoformat()
    if isinstance(value, np.datetime64):
        if np.datetime_data(value.dtype)[0] not in ("Y", "M", "D"):
            return value.astype("datetime64[s]")
        value = str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:04d}"
    if not isinstance(value, str):
        raise TypeError(f"time must be a string, date, datetime or slice, got "
                        f"{type(value).__name__}")
    text = value.strip()
    if _PERIOD.match(text):
        return _period(text)[1 if end else 0]
    try:
        return np.datetime64(parse_time(text), "s")
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: {_FORMS}") from None


_FORMS = ("use a year (2024), a month (2024-05), a day (2024-05-03), an ISO datetime, or "
          "START/END of these")


def select_times(times: np.ndarray, time: TimeSelection) -> np.ndarray:
    """Indices of ``times`` (datetime64) selected by ``time``.

    ``None``: all; a year ``"2024"``, month ``"2024-05"`` or day ``"2024-06-15"``: every
    acquisition in it; a datetime (or ISO string with a time of day): exactly it;
    ``"START/END"`` or ``slice(start, end)``: an inclusive range whose ends are periods too
    (``"2024-05/2024-07"`` is May 1 to July 31; either end may be open); a list: the union.
    """
    times = times.astype("datetime64[s]")
    if time is None:
        return np.arange(times.size)
    if isinstance(time, (list, tuple)):
        parts = [select_times(times, t) for t in time]
        return np.unique(np.concatenate(parts)) if parts else np.arange(0)
    if isinstance(time, slice):
        rng = _Range(_bound(time.start, end=False), _bound(time.stop, end=True))
    elif isinstance(time, str) and "/" in time:
        a, b = time.split("/", 1)
        rng = _Range(_bound(a.strip(), end=False), _bound(b.strip(), end=True))
    else:
        rng = _Range(_bound(time, end=False), _bound(time, end=True))
    sel = np.ones(times.size, dtype=bool)
    if rng.start is not None:
        sel &= times >= rng.start
    if rng.end is not None:
        sel &= times <= rng.end
    return np.flatnonzero(sel)


def describe_times(times: np.ndarray) -> str:
    """``"3 dates from 2024-06-15 to 2024-08-24"`` (for messages)."""
    if times.size == 0:
        return "no dates"
    days = sorted({str(t)[:10] for t in times.astype("datetime64[s]")})
    if times.size == 1:
        return f"1 date, {days[0]}"
    if len(days) == 1:
        return f"{times.size} dates, all on {days[0]}"
    return f"{times.size} dates from {days[0]} to {days[-1]}"


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
