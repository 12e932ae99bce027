"""Which pixels hold data: source footprints per band and date, and the one valid-pixel rule.

A grid is padded to its chunk lattice and may cover many tiles; a pixel that no ingested source
covers holds the array's fill value, which for a layer without declared nodata (a land-cover
code 0, a cloud flag 0) is indistinguishable from real data. The store therefore records, for
every band and date, the footprint of each source written (its tile name and bounds in the
grid's CRS) in the grid group's attributes, written in the same PUT as the commit. A pixel is
valid when it lies inside a committed footprint of its band and date and its value is not the
band's nodata (nor NaN, for floats): see :func:`valid_mask` and :func:`covered_mask`.

Bounds are kept in CRS units, not pixel indices, so they survive a grid growing west or north.
The tile name also orders overlapping sources: where two sources of one band and date overlap,
the valid pixel of the source whose tile name sorts first wins, whatever order they were
ingested in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ._grid import GridSpec

__all__ = [
    "FOOTPRINT_ATTR",
    "Footprint",
    "covered_mask",
    "empty_value",
    "footprints_of",
    "merge_footprints",
    "time_key",
    "valid_mask",
    "window_covered",
    "windows_of",
]

#: Grid group attribute: ``{band: {time: [footprint, ...]}}`` of committed sources.
FOOTPRINT_ATTR = "parcelzarr_sources"


@dataclass(frozen=True)
class Footprint:
    """One committed source of one band and date.

    Attributes
    ----------
    tile:
        The source's tile id (or file name): unique per band and date, and its priority
        where sources overlap (smallest first).
    bounds:
        (left, bottom, right, top) in the grid's CRS.
    uri:
        Where the source was read from (credential-free), to re-read its valid pixels when a
        later ingest adds an overlapping source of higher priority.
    band_index:
        1-based band of that file.
    """

    tile: str
    bounds: tuple[float, float, float, float]
    uri: str = ""
    band_index: int = 1

    def as_json(self) -> dict[str, Any]:
        return {"tile": self.tile, "bounds": list(self.bounds), "uri": self.uri,
                "band_index": self.band_index}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Footprint:
        left, bottom, right, top = (float(v) for v in raw["bounds"])
        return cls(str(raw["tile"]), (left, bottom, right, top), str(raw.get("uri", "")),
                   int(raw.get("band_index", 1)))


def time_key(when: datetime | np.datetime64) -> str:
    """The attribute key of a date: ISO 8601 to the second, no time zone."""
    if isinstance(when, np.datetime64):
        return str(when.astype("datetime64[s]"))
    return when.replace(tzinfo=None, microsecond=0).isoformat()


def footprints_of(attrs: Mapping[str, Any], band: str) -> dict[str, tuple[Footprint, ...]] | None:
    """Committed footprints of ``band`` by time key, or None for a store written before
    footprints were recorded."""
    raw = attrs.get(FOOTPRINT_ATTR)
    if not isinstance(raw, Mapping):
        return None
    per_time = raw.get(band)
    if not isinstance(per_time, Mapping):
        return {}
    return {str(t): tuple(Footprint.from_json(f) for f in fps) for t, fps in per_time.items()}


def merge_footprints(
    attrs: Mapping[str, Any], new: Mapping[tuple[str, str], Iterable[Footprint]]
) -> dict[str, Any]:
    """The attribute value after adding ``new`` ((band, time key) -> footprints).

    A footprint replaces one of the same tile (a re-ingest of a source after a failed run).
    """
    raw = attrs.get(FOOTPRINT_ATTR)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(b): {str(t): list(fps) for t, fps in per_time.items()}
        for b, per_time in (raw.items() if isinstance(raw, Mapping) else ())
    }
    for (band, when), fps in new.items():
        slot = out.setdefault(band, {}).setdefault(when, [])
        for fp in fps:
            slot[:] = [f for f in slot if f["tile"] != fp.tile]
            slot.append(fp.as_json())
        slot.sort(key=lambda f: f["tile"])
    return out


def windows_of(spec: GridSpec, footprints: Sequence[Footprint]) -> np.ndarray:
    """Pixel windows ``(n, 4)`` of row0, row1, col0, col1 of footprints on ``spec``."""
    wins = [spec.pixel_window(fp.bounds) for fp in footprints]
    return np.asarray(wins, dtype=np.int64).reshape(-1, 4)


def covered_mask(windows: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether grid pixels ``(rows, cols)`` (broadcast together) lie inside any window."""
    rows, cols = np.broadcast_arrays(rows, cols)
    out = np.zeros(rows.shape, dtype=bool)
    for r0, r1, c0, c1 in windows:
        out |= (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
    return out


def window_covered(windows: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> bool | None:
    """True if window [r0:r1, c0:c1] lies inside one footprint, False if it meets none,
    None if partly covered."""
    if windows.size == 0:
        return False
    w = windows
    if np.any((w[:, 0] <= r0) & (w[:, 1] >= r1) & (w[:, 2] <= c0) & (w[:, 3] >= c1)):
        return True
    if not np.any((w[:, 0] < r1) & (w[:, 1] > r0) & (w[:, 2] < c1) & (w[:, 3] > c0)):
        return False
    return None


def empty_value(dtype: np.dtype[Any], nodata: float | int | None) -> float | int:
    """What a pixel no source covers holds: nodata, else NaN for floats, else 0 (then only
    the footprints tell it from data)."""
    if nodata is not None:
        return nodata
    return float("nan") if dtype.kind == "f" else 0


def valid_mask(values: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """Pixels whose value is data: not ``nodata`` and, for floats, not NaN.

    The one rule ingest and query share. Whether a pixel is covered by a source at all is a
    separate question (:func:`covered_mask`).
    """
    if values.dtype.kind == "f":
        ok = ~np.isnan(values)
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            ok &= values != nodata
        return ok
    if nodata is None:
        return np.ones(values.shape, dtype=bool)
    return values != nodata
