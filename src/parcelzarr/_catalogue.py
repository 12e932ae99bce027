"""The catalogue of a store: its grids, their bands and dates, read once and frozen.

:func:`read_catalogue` walks the committed root group once; queries, ``info`` and the xarray
view share the result. Ingest, compaction and recovery can build the same object from a live
root (``read_catalogue(open_root(store, write=True))``) instead of walking the groups
themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from parcelzarr._footprint import Footprint, footprints_of, time_key, windows_of
from parcelzarr._grid import GridSpec
from parcelzarr._layout import GRID_ATTR, ROOT_ATTR, band_info, grid_names, grid_spec, open_root
from parcelzarr.errors import BandNotFoundError, StoreNotFoundError

__all__ = ["BandInfo", "Catalogue", "GridInfo", "band_array", "open_catalogue", "read_catalogue"]


@dataclass(frozen=True)
class BandInfo:
    """One band array of a grid: stored dtype, nodata (``_FillValue``), scale and offset.

    Mapping-style access (``info["nodata"]``, ``info.get("scale_factor")``) is kept for
    code written when this was a dict.
    """

    dtype: np.dtype[Any]
    nodata: float | int | None
    scale_factor: float | None = None
    add_offset: float | None = None

    @classmethod
    def of(cls, arr: zarr.Array) -> BandInfo:
        """The band information of a stored band array."""
        raw = band_info(arr)
        return cls(raw["dtype"], raw["nodata"], raw.get("scale_factor"), raw.get("add_offset"))

    def __getitem__(self, key: str) -> Any:
        if key not in ("dtype", "nodata", "scale_factor", "add_offset"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``info[key]``, or ``default`` for an unknown key."""
        try:
            return self[key]
        except KeyError:
            return default

    @property
    def scale(self) -> float:
        """Multiplier to reflectance (1.0 when none is declared)."""
        return self.scale_factor or 1.0

    @property
    def offset(self) -> float:
        """Offset to reflectance (0.0 when none is declared)."""
        return self.add_offset or 0.0


@dataclass(frozen=True)
class GridInfo:
    """One grid of a store: its geometry, bands (with nodata, scale, offset) and dates."""

    name: str
    spec: GridSpec
    bands: Mapping[str, BandInfo]
    times: np.ndarray
    #: band -> time key -> committed source footprints (None: written before they were
    #: recorded, every pixel of the grid counts as covered).
    footprints: Mapping[str, Mapping[str, tuple[Footprint, ...]]] | None = None

    def holds_all(self, bands: tuple[str, ...]) -> bool:
        """Whether every band of ``bands`` is stored in this grid."""
        return all(b in self.bands for b in bands)

    def source_windows(self, band: str, t_index: int) -> np.ndarray:
        """Pixel windows ``(n, 4)`` of the sources of ``band`` at time index ``t_index`` (the
        whole grid for a store written before footprints were recorded)."""
        if self.footprints is None:
            return np.array([[0, self.spec.height, 0, self.spec.width]], dtype=np.int64)
        fps = self.footprints.get(band, {}).get(time_key(self.times[t_index]), ())
        return windows_of(self.spec, fps)

    def holds(self, band: str, t_index: int) -> bool:
        """Whether a source of ``band`` was committed at time index ``t_index`` (every band
        shares the grid's time axis; a band not ingested on a date holds nothing there).
        Stores written before footprints were recorded: always True."""
        if self.footprints is None:
            return True
        return bool(self.footprints.get(band, {}).get(time_key(self.times[t_index])))

    def footprint_windows(self, band: str, t_index: int) -> np.ndarray | None:
        """:meth:`source_windows` for a band without declared nodata, whose fill value is a
        valid code; None where nodata already marks uncovered pixels (or for a legacy
        store)."""
        if self.footprints is None or self.bands[band].nodata is not None:
            return None
        return self.source_windows(band, t_index)


@dataclass(frozen=True)
class Catalogue:
    """Every grid of a store, by name, in the order the store lists them."""

    grids: Mapping[str, GridInfo]

    @property
    def bands(self) -> list[str]:
        """All band names in the store, sorted."""
        return sorted({b for g in self.grids.values() for b in g.bands})

    def grids_with(self, band: str) -> list[GridInfo]:
        """The grids holding ``band``.

        Raises
        ------
        BandNotFoundError
            No grid holds it.
        """
        found = [g for g in self.grids.values() if band in g.bands]
        if not found:
            raise BandNotFoundError(f"band {band!r} not in the store; it holds {self.bands}")
        return found

    def holding(self, bands: tuple[str, ...]) -> list[GridInfo]:
        """The grids holding every band of ``bands``."""
        return [g for g in self.grids.values() if g.holds_all(bands)]

    def times_of(self, bands: tuple[str, ...]) -> np.ndarray:
        """Dates at which every band of ``bands`` was ingested (in any grid holding them)."""
        times = [g.times[t] for g in self.holding(bands)
                 for t in range(g.times.size) if all(g.holds(b, t) for b in bands)]
        return np.asarray(times, dtype="datetime64[s]")


def _grid_info(name: str, group: zarr.Group) -> GridInfo:
    bands = {k: BandInfo.of(a) for k, a in group.arrays() if a.ndim == 3}
    time_arr = group["time"]
    assert isinstance(time_arr, zarr.Array)
    t = np.asarray(time_arr[:]).astype("datetime64[s]") if bands else np.array(
        [], dtype="datetime64[s]")
    t.flags.writeable = False
    fps = {b: footprints_of(group.attrs, b) for b in bands}
    known = {b: v for b, v in fps.items() if v is not None}
    return GridInfo(name, grid_spec(group), bands, t,
                    known if len(known) == len(fps) else None)


def read_catalogue(root: zarr.Group, *, skip_missing: bool = False) -> Catalogue:
    """The catalogue of the store whose root group is ``root`` (grids the root lists that
    carry grid attributes; with ``skip_missing``, also leaving out grids it lists but the
    store does not hold, as ingest planning does).

    Raises
    ------
    KeyError
        The root lists a grid the store does not hold (unless ``skip_missing``).
    """
    grids: dict[str, GridInfo] = {}
    for name in grid_names(root):
        try:
            group = root[name]
        except KeyError:
            if skip_missing:
                continue
            raise
        assert isinstance(group, zarr.Group)
        if GRID_ATTR not in group.attrs:
            continue
        grids[name] = _grid_info(name, group)
    return Catalogue(grids)


def band_array(root: zarr.Group, grid: str, band: str) -> zarr.Array:
    """The array of ``band`` in ``grid``."""
    arr = root[f"{grid}/{band}"]
    assert isinstance(arr, zarr.Array)
    return arr


def open_catalogue(store: Any, url: str, *,
                   root: zarr.Group | None = None) -> tuple[zarr.Group, Catalogue]:
    """The committed root group of the parcelzarr store ``store`` (at ``url``, for messages)
    and its catalogue (of ``root``, a committed root already read, if given).

    Raises
    ------
    StoreNotFoundError
        ``store`` holds no parcelzarr store.
    """
    try:
        root = open_root(store) if root is None else root
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise StoreNotFoundError(
            f"no parcelzarr store at {url}: create one with `parcelzarr ingest SOURCE "
            f"--store {url}`"
        ) from exc
    meta = root.attrs.get(ROOT_ATTR)
    if not isinstance(meta, Mapping) or not meta:
        raise StoreNotFoundError(f"{url} is a Zarr group but not a parcelzarr store")
    return root, read_catalogue(root)
