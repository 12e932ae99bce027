"""Which grid reads which parcel: one rule for the local and the distributed query.

Each parcel goes, for each output, to the grid holding the output's bands whose bounds cover
the largest fraction of the parcel's bounding box (the first such grid on a tie); a parcel no
grid meets is "outside".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from parcelzarr._catalogue import Catalogue, GridInfo
from parcelzarr.errors import BandNotFoundError

from ._parcels import ParcelSet
from ._request import Output

__all__ = ["Assignment", "assign", "grid_of_parcels", "parcel_status", "warn_if_all_outside"]


@dataclass(frozen=True)
class Assignment:
    """The parcels (positions ``subset``) a grid reads for some outputs."""

    grid: str
    outputs: tuple[Output, ...]
    subset: np.ndarray


def _scores(pset: ParcelSet, grids: Sequence[GridInfo]) -> dict[str, np.ndarray]:
    """Per grid, the fraction of each parcel's bounding box inside the grid's bounds
    (1.0 for a degenerate box on or inside them)."""
    scores: dict[str, np.ndarray] = {}
    for info in grids:
        geoms = pset.to_crs(info.spec.crs)
        b = shapely.bounds(geoms)
        left, bottom, right, top = info.spec.bounds
        w = np.clip(np.minimum(b[:, 2], right) - np.maximum(b[:, 0], left), 0, None)
        h = np.clip(np.minimum(b[:, 3], top) - np.maximum(b[:, 1], bottom), 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(area > 0, w * h / area, ((w >= 0) & (h >= 0)
                            & (b[:, 0] <= right) & (b[:, 2] >= left)
                            & (b[:, 1] <= top) & (b[:, 3] >= bottom)).astype(float))
        scores[info.name] = np.nan_to_num(frac, nan=0.0)
    return scores


def _best(scores: dict[str, np.ndarray], candidates: Sequence[GridInfo]) -> np.ndarray:
    """Index into ``candidates`` of each parcel's grid, -1 where none meets it."""
    stack = np.stack([scores[g.name] for g in candidates])
    return np.where(stack.max(axis=0) > 0, np.argmax(stack, axis=0), -1)


def assign(pset: ParcelSet, catalogue: Catalogue, outputs: Sequence[Output]) -> list[Assignment]:
    """Give each parcel, for each output, the grid that covers most of it; outputs that go
    to the same grid for the same parcels share one :class:`Assignment`."""
    scores = _scores(pset, list(catalogue.grids.values()))
    groups: dict[tuple[str, bytes], tuple[list[Output], np.ndarray]] = {}
    for out in outputs:
        candidates = catalogue.holding(out.inputs)
        if not candidates:
            raise BandNotFoundError(f"no grid holds all of {list(out.inputs)} (for {out.name})")
        best = _best(scores, candidates)
        for ci, g in enumerate(candidates):
            subset = np.flatnonzero(best == ci)
            if subset.size == 0:
                continue
            groups.setdefault((g.name, subset.tobytes()), ([], subset))[0].append(out)
    return [Assignment(k[0], tuple(outs), subset) for k, (outs, subset) in groups.items()]


def grid_of_parcels(pset: ParcelSet, catalogue: Catalogue,
                    outputs: Sequence[Output]) -> np.ndarray:
    """Each parcel's grid (its name; "" where none meets it) by :func:`assign`'s rule for the
    first output that has one."""
    grid = np.full(len(pset), "", dtype=object)
    for a in assign(pset, catalogue, outputs):
        unset = a.subset[grid[a.subset] == ""]
        grid[unset] = a.grid
    return grid


def parcel_status(pset: ParcelSet) -> np.ndarray:
    """Per parcel, what its geometry allows before any grid is consulted: "ok", "empty" (no
    area: null, empty or nothing polygonal left after repair) or "invalid geometry"
    (non-finite coordinates, beyond repair). Grids add "outside" and "too large"."""
    status = np.full(len(pset), "ok", dtype=object)
    status[shapely.is_empty(pset.geometry) | (shapely.area(pset.geometry) == 0)] = "empty"
    if pset.unusable is not None:
        status[pset.unusable] = "invalid geometry"
    return status


def warn_if_all_outside(pset: ParcelSet, assignment: Sequence[Assignment],
                        catalogue: Catalogue, *, stacklevel: int) -> None:
    """A query none of whose parcels meets any grid is almost always a CRS mix-up: say so."""
    if any(a.subset.size for a in assignment) or len(pset) == 0:
        return
    if shapely.is_empty(pset.geometry).all():
        return
    b = shapely.total_bounds(pset.geometry)
    warnings.warn(
        f"none of the {len(pset)} parcels overlaps the store (parcels in {pset.crs.to_string()} "
        f"span {', '.join(f'{v:.6g}' for v in b)}; grids: {', '.join(catalogue.grids)}): every "
        "parcel gets count 0; check the parcels' CRS", UserWarning, stacklevel=stacklevel)
