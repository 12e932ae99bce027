"""Prepare the store for an ingest (live metadata only, invisible until the commit): the
committed grids and bands, grids created or grown, bands and dates added; tasks grouped into
jobs that each alone write their objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import StoreHandle

from parcelzarr._catalogue import read_catalogue
from parcelzarr._footprint import (
    FOOTPRINT_ATTR,
    Footprint,
    footprints_of,
    merge_footprints,
    time_key,
)
from parcelzarr._grid import GridSpec
from parcelzarr._layout import (
    create_band,
    create_grid,
    open_live,
)

from ._grow import grow_grid
from ._plan import BandSpec, IngestPlan
from ._relayout import Journal
from ._run import Job, JobItem
from ._sources import SourceInfo

__all__ = ["Prepared", "existing_grids", "footprints", "jobs_for", "legacy_footprints",
           "prepare_grid"]


def existing_grids(
    root: zarr.Group | None,
) -> tuple[dict[str, GridSpec], dict[str, dict[str, BandSpec]]]:
    grids: dict[str, GridSpec] = {}
    bands: dict[str, dict[str, BandSpec]] = {}
    if root is None:
        return grids, bands
    for name, grid in read_catalogue(root, skip_missing=True).grids.items():
        grids[name] = grid.spec
        bands[name] = {}
        for key, info in grid.bands.items():
            scaling = {k: v for k, v in (("scale_factor", info.scale_factor),
                                         ("add_offset", info.add_offset)) if v is not None}
            bands[name][key] = BandSpec(str(info.dtype), info.nodata, scaling)
    return grids, bands


def time_values(group: zarr.Group) -> list[int]:
    arr = group["time"]
    assert isinstance(arr, zarr.Array)
    return [int(v) for v in np.asarray(arr[:])] if arr.shape[0] else []


@dataclass(frozen=True)
class Prepared:
    group: zarr.Group
    index: dict[datetime, int]
    preexisting: frozenset[datetime]
    attrs: Mapping[str, Any]  # the grid group's committed attributes (footprints)

    def committed(self, band: str, when: datetime) -> tuple[Footprint, ...]:
        """Footprints of ``band`` at ``when`` already committed."""
        if when not in self.preexisting:
            return ()
        return (footprints_of(self.attrs, band) or {}).get(time_key(when), ())


def prepare_grid(handle: StoreHandle, root: zarr.Group, plan: IngestPlan, name: str,
                  existing: GridSpec | None, inner_chunk: int | None,
                  journal: Journal) -> Prepared:
    """Create or grow the grid, its bands and its time axis (live documents only: all of it
    becomes visible at the commit); returns time indices."""
    gp = plan.grids[name]
    if existing is not None:
        group = open_live(handle.store, name)
        if gp.spec != existing:
            bands_present = [k for k, a in group.arrays() if a.ndim == 3]
            grow_grid(handle.store, name, existing, gp.spec, bands_present, journal=journal)
            group = open_live(handle.store, name)
    else:
        create_grid(root, gp.spec)
        group = open_live(handle.store, name)
    times = time_values(group)
    n_times = len(times)
    attrs: dict[str, Any] = {FOOTPRINT_ATTR: {}}
    if existing is not None:
        attrs = dict(group.attrs)
        if FOOTPRINT_ATTR not in attrs:  # bands committed before footprints were recorded
            attrs[FOOTPRINT_ATTR] = legacy_footprints(group, existing, times)
    for band, bspec in gp.bands.items():
        if band not in group:
            create_band(group, band, dtype=np.dtype(bspec.dtype), nodata=bspec.nodata,
                        n_times=n_times, attrs=bspec.attrs, inner_chunk=inner_chunk,
                        spec=gp.spec)
    index: dict[datetime, int] = {}
    preexisting: set[datetime] = set()
    seconds = {t: int(np.datetime64(t, "s").astype(np.int64)) for t in gp.times}
    new = [t for t in gp.times if seconds[t] not in times]
    for t in gp.times:
        if seconds[t] in times:
            index[t] = times.index(seconds[t])
            preexisting.add(t)
    if new:
        # Live metadata only: readers see the new dates at the commit (consolidation).
        group = open_live(handle.store, name)
        total = n_times + len(new)
        for _key, arr in group.arrays():
            if arr.ndim == 3:
                arr.resize((total, *arr.shape[1:]))
        tarr = group["time"]
        assert isinstance(tarr, zarr.Array)
        tarr.resize((total,))
        tarr[n_times:total] = np.array([seconds[t] for t in new], dtype="int64")
        for k, t in enumerate(new):
            index[t] = n_times + k
    return Prepared(group, index, frozenset(preexisting), attrs)


def legacy_footprints(group: zarr.Group, spec: GridSpec, times: Sequence[int]) -> Any:
    """Footprints for a grid committed before footprints were recorded: every committed
    band and date covers the grid's extent at the time (an anonymous tile that sorts first,
    so committed pixels keep winning where they are valid, as they did)."""
    whole = Footprint("", spec.bounds)
    new = {(band, time_key(np.datetime64(int(t), "s"))): [whole]
           for band, arr in group.arrays() if arr.ndim == 3 for t in times[:arr.shape[0]]}
    return merge_footprints({}, new)


def footprints(sources: Sequence[SourceInfo]) -> dict[tuple[str, str], list[Footprint]]:
    """Footprints of written sources by (band, time key)."""
    out: dict[tuple[str, str], list[Footprint]] = {}
    for s in sources:
        out.setdefault((s.band, time_key(s.time)), []).append(
            Footprint(s.tile_id, s.bounds, s.uri, s.band_index))
    return out


def jobs_for(plan: IngestPlan, prepared: Mapping[str, Prepared]) -> list[Job]:
    """Group tasks so that each job alone writes its objects (a compacted time block holds
    several dates: their tasks over one region run in one job, in order)."""
    groups: dict[tuple[Any, ...], list[JobItem]] = {}
    for task in plan.tasks:
        prep = prepared[task.grid]
        arr = prep.group[task.band]
        assert isinstance(arr, zarr.Array)
        tc = (arr.shards or arr.chunks)[0]
        t_index = prep.index[task.time]
        key = (task.grid, task.band, t_index // tc, task.row0, task.col0)
        groups.setdefault(key, []).append(
            JobItem(task, t_index, prep.committed(task.band, task.time)))
    return [Job(grid=k[0], band=k[1], items=tuple(v)) for k, v in groups.items()]
