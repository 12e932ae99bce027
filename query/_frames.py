"""Result rows: per-layer frames of the engine's results, rows for parcels outside every
grid, and the final concatenation in input order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from parcelzarr._catalogue import Catalogue

from ._assign import Assignment
from ._composite import interval_labels
from ._engine import ClassCounts
from ._parcels import ParcelSet
from ._rasterize import outside_pixels, too_large
from ._request import Dates, ZonalRequest

__all__ = ["class_frame", "concat", "stat_frame", "uncovered_frames"]


def stat_frame(pset: ParcelSet, subset: np.ndarray, band: str, when: np.datetime64,
               res: Mapping[str, np.ndarray], names: Sequence[str], *,
               status: np.ndarray) -> pd.DataFrame:
    """Rows of the parcels ``subset`` for one band and date: the statistics ``names`` of
    ``res`` and each parcel's ``status``."""
    data: dict[str, Any] = {
        str(pset.ids.name): pset.ids.to_numpy()[subset],
        "band": band,
        "time": np.full(subset.size, when),
        "_order": subset,
    }
    data.update({k: res[k] for k in names})
    data["status"] = status
    return pd.DataFrame(data)


def class_frame(pset: ParcelSet, subset: np.ndarray, band: str, when: np.datetime64,
                res: ClassCounts) -> pd.DataFrame:
    """Categorical rows: one per (parcel, class) the engine found, with count, fraction of
    the parcel's valid pixels and ground area (and, with a weighting raster, the class's
    share of the parcel's summed weights, ``weighted_frac``)."""
    par, cnt = res.parcel, res.count
    total = np.bincount(par, weights=cnt, minlength=subset.size)
    frame = pd.DataFrame({
        pset.ids.name: pset.ids.to_numpy()[subset[par]],
        "band": band,
        "time": np.full(par.size, when),
        "_order": subset[par],
        "class": res.klass,
        "count": cnt,
        "fraction": cnt / total[par],
        "area_m2": res.area,
    })
    if res.wcount is not None:  # exactextract's weighted_frac: share of sum(c_i w_i)
        wtotal = np.bincount(par, weights=res.wcount, minlength=subset.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["weighted_frac"] = res.wcount / wtotal[par]
    return frame


def uncovered_frames(pset: ParcelSet, catalogue: Catalogue, assignment: Sequence[Assignment],
                     request: ZonalRequest, dates: Dates, *,
                     status: np.ndarray) -> list[pd.DataFrame]:
    """Rows for parcels outside every grid: count 0, NaN statistics, and their pixels
    (on the first grid holding the output) as ``nodata``; status "outside" unless the
    parcel is unusable ("empty", "invalid geometry", "too large")."""
    names = request.stats.names
    frames = []
    for out in request.outputs:
        covered = np.zeros(len(pset), dtype=bool)
        for a in assignment:
            if any(o.name == out.name for o in a.outputs):
                covered[a.subset] = True
        missing = np.flatnonzero(~covered)
        if missing.size == 0:
            continue
        times = np.unique(np.concatenate([
            g.times[dates[(g.name, out.name)]] for g in catalogue.grids.values()
            if (g.name, out.name) in dates
        ]))
        if request.interval is not None:  # composites: one row per interval
            times = np.unique(interval_labels(times, request.interval))
        grid = catalogue.holding(out.inputs)[0]
        geoms = pset.to_crs(grid.spec.crs)[missing]
        beyond = outside_pixels(geoms, grid.spec, all_touched=request.all_touched,
                                coverage=request.coverage)
        why = np.where(status[missing] == "ok", "outside", status[missing])
        why[too_large(geoms, grid.spec)] = "too large"
        for when in times:
            res = {k: (np.zeros(missing.size, beyond.dtype) if k == "count"
                       else beyond if k == "nodata"
                       else np.full(missing.size, np.nan)) for k in names}
            frames.append(stat_frame(pset, missing, out.name, when, res, names, status=why))
    return frames


def concat(frames: list[pd.DataFrame], pset: ParcelSet, names: Sequence[str], *,
           integer_counts: bool = True, sort: Sequence[str] | None = None) -> pd.DataFrame:
    """All rows in input order (then band, time), ``count`` and ``nodata`` as integers
    unless weighted; the bare columns when there is no row."""
    if not frames:
        cols = [pset.ids.name, "band", "time", *names]
        return pd.DataFrame({c: [] for c in cols})
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(list(sort or ["_order", "band", "time"]), kind="stable")
    df = df.drop(columns="_order").reset_index(drop=True)
    if integer_counts:
        for k in ("count", "nodata"):
            if k in df.columns:
                df[k] = df[k].astype("int64")
    return df
