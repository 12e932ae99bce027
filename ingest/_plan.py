"""Plan an ingest (pure): sources in, grids and per-region write tasks out.

Tasks are defined per *output region* (a block of whole chunks of one band and date), never
per source, so no two tasks ever write the same object, whatever the number of workers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyproj import CRS

from parcelzarr._grid import GridSpec
from parcelzarr.errors import GridGrowthError, IngestConflictError

from ._sources import SourceInfo

__all__ = ["BandSpec", "GridPlan", "IngestPlan", "RegionTask", "grid_name_of", "plan_ingest"]


@dataclass(frozen=True)
class BandSpec:
    """Pixel type, nodata and attributes of one band in one grid."""

    dtype: str
    nodata: float | int | None
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegionTask:
    """Write one block of chunks of one band and date from the sources that cover it.

    ``sources`` are indices into :attr:`IngestPlan.sources`, in priority order (tile id):
    where two sources overlap, the first valid (non-nodata) pixel wins.
    """

    grid: str
    band: str
    time: datetime
    row0: int
    row1: int
    col0: int
    col1: int
    sources: tuple[int, ...]

    @property
    def npixels(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)


@dataclass(frozen=True)
class GridPlan:
    """One target grid: its extent after the ingest, its bands and the dates written."""

    spec: GridSpec
    bands: Mapping[str, BandSpec]
    times: tuple[datetime, ...]


@dataclass(frozen=True)
class IngestPlan:
    """Everything an ingest will do, decided before a byte is written."""

    sources: tuple[SourceInfo, ...]
    grids: Mapping[str, GridPlan]
    tasks: tuple[RegionTask, ...]
    skipped: tuple[SourceInfo, ...]


def _source_grid(src: SourceInfo, chunk: int) -> GridSpec:
    rx, ry = src.res
    _a, _, c, _, _, f = src.transform
    return GridSpec.covering(
        CRS.from_wkt(src.crs_wkt).to_wkt(), rx, ry, src.bounds, phase_x=c, phase_y=f,
        chunk_y=chunk, chunk_x=chunk,
    )


def grid_name_of(src: SourceInfo) -> str:
    """Name of the grid ``src`` belongs to (CRS and resolution), e.g. ``utm16n/10m``."""
    return _source_grid(src, 256).name


def _area(spec: GridSpec | None) -> int:
    return 0 if spec is None else spec.width * spec.height


def _check_growth(src: SourceInfo, before: GridSpec | None, after: GridSpec,
                  limit: int | None) -> None:
    added = _area(after) - _area(before)
    if limit is not None and added > limit:
        raise GridGrowthError(
            f"{src.uri} would add {added:,} px to grid {after.name} ({after.width:,} x "
            f"{after.height:,} px after it), more than the limit of {limit:,} px: check its "
            "georeferencing, or raise the limit (--max-growth-px, Python max_growth_px=, "
            "PARCELZARR_MAX_GROWTH_PX) if the grid really is meant to be that large"
        )


def _check_duplicates(sources: Sequence[SourceInfo], grid_of: Mapping[int, str]) -> None:
    seen: dict[str, tuple[SourceInfo, str]] = {}
    for i, src in enumerate(sources):
        if src.key in seen and (seen[src.key][0].uri, seen[src.key][0].band_index) != (
            src.uri, src.band_index
        ):
            other, where = seen[src.key]
            raise IngestConflictError(
                f"two sources claim {src.key}: {other.uri} (grid {where}) and {src.uri} "
                f"(grid {grid_of[i]}); ingest one of them"
            )
        seen[src.key] = (src, grid_of[i])


def plan_ingest(
    sources: Sequence[SourceInfo],
    *,
    existing: Mapping[str, GridSpec] | None = None,
    existing_bands: Mapping[str, Mapping[str, BandSpec]] | None = None,
    done: Mapping[str, str] | None = None,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
    force: bool = False,
    chunk: int = 256,
    region_chunks: int = 8,
    max_growth_px: int | None = None,
) -> IngestPlan:
    """Plan writing ``sources`` into a store that already has ``existing`` grids.

    Parameters
    ----------
    sources:
        Inspected sources.
    existing:
        Grid name -> spec of grids already in the store.
    existing_bands:
        Grid name -> band name -> spec of bands already in the store.
    done:
        Manifest: ``"{grid}/{source key}"`` -> fingerprint of sources already written; those
        with an unchanged fingerprint are skipped.
    recorded:
        The manifest's full records (uri, fingerprint, band index): a file already stored
        under another key (another ``--time`` or ``--band``) is refused unless ``force``.
    force:
        Ingest such files again anyway (their data is then stored twice).
    chunk:
        Chunk edge in pixels for new grids.
    region_chunks:
        Tasks write blocks of ``region_chunks`` x ``region_chunks`` chunks.
    max_growth_px:
        Most pixels one source may add to a grid (creating it, or growing it); None: no
        limit. A source beyond it raises :class:`GridGrowthError`.
    """
    existing = dict(existing or {})
    existing_bands = existing_bands or {}
    done = done or {}
    # Priority where sources of one band and date overlap: the smallest tile id (or file
    # name) wins, whatever the order or the runs they are ingested in (see _footprint).
    order = sorted(range(len(sources)), key=lambda i: (
        sources[i].time, sources[i].tile_id, sources[i].band_index, sources[i].uri))
    srcs = [sources[i] for i in order]
    specs: dict[str, GridSpec] = {}
    grid_of: dict[int, str] = {}
    for i, src in enumerate(srcs):
        own = _source_grid(src, chunk)
        # the grid as grown by the sources before this one (else as in the store)
        base = specs.get(own.name) or existing.get(own.name)
        if base is not None:
            own = GridSpec.covering(
                own.crs_wkt, own.res_x, own.res_y, own.bounds, phase_x=src.transform[2],
                phase_y=src.transform[5], chunk_y=base.chunk_y, chunk_x=base.chunk_x,
            )
            if not base.same_lattice(own) or not _on_pixels(src, base):
                raise IngestConflictError(
                    f"{src.uri} is not on the pixel grid of {own.name} already in the store "
                    "(different pixel phase or chunking); resample it onto that grid first"
                )
            own = base.union(own)
        _check_growth(src, base, own, max_growth_px)
        specs[own.name] = own
        grid_of[i] = own.name
    _check_duplicates(srcs, grid_of)

    for i, s in enumerate(srcs):
        stamp = done.get(f"{grid_of[i]}/{s.key}")
        if stamp is not None and stamp != s.fingerprint:
            raise IngestConflictError(
                f"{s.uri} claims {s.key} in grid {grid_of[i]}, which the store already holds "
                "from a file with different content; ingest it into a new store, or give it "
                "another --band/--time"
            )
    written = [i for i, s in enumerate(srcs) if done.get(f"{grid_of[i]}/{s.key}") is None]
    if not force:
        _check_already_stored([srcs[i] for i in written], [grid_of[i] for i in written],
                              recorded or {})
    skipped = tuple(s for i, s in enumerate(srcs) if i not in set(written))

    bands: dict[str, dict[str, BandSpec]] = defaultdict(dict)
    times: dict[str, set[datetime]] = defaultdict(set)
    for i in written:
        s, g = srcs[i], grid_of[i]
        bspec = BandSpec(s.dtype, s.nodata, dict(s.attrs))
        prior = existing_bands.get(g, {}).get(s.band) or bands[g].get(s.band)
        if prior is not None and (prior.dtype != bspec.dtype or not _same_nodata(prior, bspec)):
            raise IngestConflictError(
                f"band {s.band} of {s.uri} is {s.dtype} with nodata {s.nodata}, but grid {g} "
                f"holds it as {prior.dtype} with nodata {prior.nodata}"
            )
        if prior is not None and _scaling(prior) != _scaling(bspec):
            raise IngestConflictError(
                f"band {s.band} of {s.uri} has scale/offset {_scaling(bspec)}, but grid {g} "
                f"holds it with {_scaling(prior)}; one band has one scale and offset: give "
                "the same --scale/--offset, or ingest it as another --band"
            )
        bands[g].setdefault(s.band, bspec)
        times[g].add(s.time)

    tasks: list[RegionTask] = []
    for g in sorted(bands):
        spec = specs[g]
        groups: dict[tuple[str, datetime], list[int]] = defaultdict(list)
        for i in written:
            if grid_of[i] == g:
                groups[(srcs[i].band, srcs[i].time)].append(i)
        block_y, block_x = spec.chunk_y * region_chunks, spec.chunk_x * region_chunks
        for (band, when), members in sorted(groups.items()):
            windows = {i: spec.pixel_window(srcs[i].bounds) for i in members}
            blocks: dict[tuple[int, int], list[int]] = defaultdict(list)
            for i in members:
                r0, r1, c0, c1 = windows[i]
                for by in range(r0 // block_y, math.ceil(r1 / block_y)):
                    for bx in range(c0 // block_x, math.ceil(c1 / block_x)):
                        blocks[(by, bx)].append(i)
            for (by, bx), idx in sorted(blocks.items()):
                tasks.append(
                    RegionTask(
                        grid=g, band=band, time=when,
                        row0=by * block_y, row1=min(spec.height, (by + 1) * block_y),
                        col0=bx * block_x, col1=min(spec.width, (bx + 1) * block_x),
                        sources=tuple(order[i] for i in idx),
                    )
                )
    grids = {
        g: GridPlan(specs[g], dict(bands[g]), tuple(sorted(times[g]))) for g in sorted(bands)
    }
    return IngestPlan(tuple(sources), grids, tuple(tasks), skipped)


def _check_already_stored(sources: Sequence[SourceInfo], grids: Sequence[str],
                          recorded: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a file (same URI, same fingerprint, same band of it) that the manifest already
    holds under another key: ingesting it again under another date or name duplicates it."""
    seen: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for key, rec in recorded.items():
        seen[(str(rec.get("uri")), str(rec.get("fingerprint")))].append((key, rec))
    for s, g in zip(sources, grids, strict=True):
        for key, rec in seen.get((s.uri, s.fingerprint), []):
            if key == f"{g}/{s.key}":
                continue
            index = rec.get("band_index")
            same = (index == s.band_index if index is not None
                    else key.rsplit("/", 3)[-3] == s.band)
            if same:
                raise IngestConflictError(
                    f"{s.uri} is already in the store as {key}; ingesting it again as "
                    f"{g}/{s.key} would store its data twice. Pass --force (Python "
                    "force=True) to ingest it anyway"
                )


def _scaling(spec: BandSpec) -> tuple[float | None, float | None]:
    """A band's (scale_factor, add_offset), for comparing bands."""
    def num(key: str) -> float | None:
        v = spec.attrs.get(key)
        return None if v is None else float(f"{float(v):.12g}")

    return num("scale_factor"), num("add_offset")


def _on_pixels(src: SourceInfo, spec: GridSpec) -> bool:
    """Whether ``src``'s pixel corners fall on ``spec``'s pixel corners."""
    _a, _, c, _, _, f = src.transform
    dx, dy = (c - spec.x0) / spec.res_x, (spec.y0 - f) / spec.res_y
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def _same_nodata(a: BandSpec, b: BandSpec) -> bool:
    if a.nodata is None or b.nodata is None:
        return a.nodata is b.nodata
    if math.isnan(a.nodata) and math.isnan(b.nodata):
        return True
    return a.nodata == b.nodata
