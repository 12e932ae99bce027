"""The one date parser: user-given dates, Sentinel-2 name dates and STAC datetimes become
naive UTC datetimes (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np

__all__ = ["parse_time"]


def parse_time(value: str | date | datetime | np.datetime64 | None) -> datetime | None:
    """Normalise a date to a naive UTC datetime; None stays None.

    Accepts ISO 8601 text (``2024-06-15``, ``2024-06-15T16:58:49Z``, ``+05:00`` offsets, and
    the basic form of Sentinel-2 names, ``20240615T165849``), dates, datetimes and
    ``datetime64``. A time with an offset is converted to UTC first.

    >>> parse_time("2024-06-15T18:58:49+02:00")
    datetime.datetime(2024, 6, 15, 16, 58, 49)
    >>> parse_time("20240615T165849")
    datetime.datetime(2024, 6, 15, 16, 58, 49)
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _naive_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, np.datetime64):
        return datetime.fromisoformat(str(value.astype("datetime64[s]")))
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            return _naive_utc(datetime.fromisoformat(text))
        except ValueError:
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise ValueError(f"cannot read {shown!r} as a date: use YYYY-MM-DD") from None
    raise TypeError(f"time must be a date string, date or datetime, got {type(value).__name__}")


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=None)
    return value.astimezone(UTC).replace(tzinfo=None)
