"""``ingest()``: sources in, parcel-sized Zarr chunks out (the orchestration; I/O lives here)."""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import StoreHandle, WriterLock, open_store_handle, writer_lock

from parcelzarr import _config
from parcelzarr._footprint import (
    FOOTPRINT_ATTR,
    Footprint,
    footprints_of,
    merge_footprints,
    time_key,
)
from parcelzarr._grid import GridSpec
from parcelzarr._layout import (
    GRID_ATTR,
    band_info,
    commit,
    create_band,
    create_grid,
    grid_attrs,
    grid_names,
    grid_spec,
    open_live,
    open_root,
    root_attrs,
)
from parcelzarr._progress import progress
from parcelzarr.errors import StoreLockedError

from ._fingerprint import resolve_fingerprints
from ._grow import chunk_shift, grow_grid
from ._manifest import Manifest
from ._names import check_layer_name
from ._plan import BandSpec, IngestPlan, grid_name_of, plan_ingest
from ._recover import committed_root, journal_writer, recover, rollback
from ._relayout import RELAYOUT_KEY, Journal
from ._retire import collect, finish, mark_in_place, unmark_in_place
from ._run import Job, JobItem, run_jobs
from ._sources import SourceInfo, discover_sources

__all__ = ["IngestReport", "ingest", "parse_time"]

logger = logging.getLogger(__name__)

#: Largest object (chunk or shard) edge accepted, in pixels.
MAX_CHUNK = 16384


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did."""

    store: str
    sources_written: int
    sources_skipped: int
    grids: tuple[str, ...]
    tasks: int
    pixels: int
    bytes_written: int
    seconds: float
    skipped: tuple[str, ...] = field(default=(), repr=False)
    raw_bytes: int = 0
    recovered: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        """Raw (uncompressed) pixel megabytes written per second."""
        return self.raw_bytes / 1e6 / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        text = self._summary()
        if self.recovered:
            text += "; recovered from an interrupted run: " + "; ".join(self.recovered)
        return text

    def _summary(self) -> str:
        if not self.sources_written:
            return (
                f"{self.store}: nothing to do, {self.sources_skipped} source(s) already ingested"
            )
        return (
            f"{self.store}: wrote {self.sources_written} source(s) into {', '.join(self.grids)} "
            f"({self.tasks} regions, {self.pixels / 1e6:.1f} Mpx, {self.raw_bytes / 1e6:.1f} MB "
            f"raw, {self.bytes_written / 1e6:.1f} MB stored) in {self.seconds:.1f} s "
            f"({self.mb_per_s:.1f} MB/s raw); "
            f"skipped {self.sources_skipped} already ingested"
        )


def parse_time(value: str | date | datetime | np.datetime64 | None) -> datetime | None:
    """Normalise a user-given date (``YYYY-MM-DD``, ISO datetime, date, datetime64) to a naive
    UTC datetime: a time with an offset (``+05:00``, ``Z``) is converted to UTC first."""
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


def _check_size(name: str, value: object, *, upper: int) -> int | None:
    """``value`` if None or a whole number in [1, upper], else a one-line ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__}")
    if not 1 <= int(value) <= upper:
        raise ValueError(f"{name} must be between 1 and {upper:,}, got {int(value)}")
    return int(value)


def _check_chunking(chunk_size: int | None, inner_chunk: int | None,
                    workers: int | None) -> None:
    """Refuse chunk, shard and worker settings that cannot work, before anything is written."""
    chunk = _check_size("chunk_size (--chunk)", chunk_size, upper=MAX_CHUNK)
    inner = _check_size("inner_chunk (--inner-chunk)", inner_chunk, upper=MAX_CHUNK)
    _check_size("workers (--workers)", workers, upper=1024)
    outer = chunk or _config.default_chunk()
    if inner is not None and (inner > outer or outer % inner):
        raise ValueError(
            f"inner_chunk (--inner-chunk) {inner} must divide the object edge {outer} "
            f"(--chunk): e.g. {outer // 2 if outer % 2 == 0 else outer}"
        )


def _existing(
    root: zarr.Group | None,
) -> tuple[dict[str, GridSpec], dict[str, dict[str, BandSpec]]]:
    grids: dict[str, GridSpec] = {}
    bands: dict[str, dict[str, BandSpec]] = {}
    if root is None:
        return grids, bands
    for name in grid_names(root):
        try:
            group = root[name]
        except KeyError:
            continue
        assert isinstance(group, zarr.Group)
        if GRID_ATTR not in group.attrs:
            continue
        grids[name] = grid_spec(group)
        bands[name] = {}
        for key, arr in group.arrays():
            if arr.ndim == 3:
                info = band_info(arr)
                scaling = {k: info[k] for k in ("scale_factor", "add_offset")
                           if info.get(k) is not None}
                bands[name][key] = BandSpec(str(info["dtype"]), info["nodata"], scaling)
    return grids, bands


def _time_values(group: zarr.Group) -> list[int]:
    arr = group["time"]
    assert isinstance(arr, zarr.Array)
    return [int(v) for v in np.asarray(arr[:])] if arr.shape[0] else []


@dataclass(frozen=True)
class _Prepared:
    group: zarr.Group
    index: dict[datetime, int]
    preexisting: frozenset[datetime]
    attrs: Mapping[str, Any]  # the grid group's committed attributes (footprints)

    def committed(self, band: str, when: datetime) -> tuple[Footprint, ...]:
        """Footprints of ``band`` at ``when`` already committed."""
        if when not in self.preexisting:
            return ()
        return (footprints_of(self.attrs, band) or {}).get(time_key(when), ())


def _prepare_grid(handle: StoreHandle, root: zarr.Group, plan: IngestPlan, name: str,
                  existing: GridSpec | None, inner_chunk: int | None,
                  journal: Journal) -> _Prepared:
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
    times = _time_values(group)
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
    return _Prepared(group, index, frozenset(preexisting), attrs)


def ingest(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    band: str | None = None,
    time: str | date | datetime | None = None,
    times: Sequence[str | date | datetime] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    force: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    source_storage_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    inner_chunk: int | None = None,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    quiet: bool = False,
    lock_timeout: float | None = None,
    max_growth_px: int | None = None,
) -> IngestReport:
    """Rewrite GeoTIFF bands into parcel-sized Zarr chunks in ``store``.

    Safe to interrupt at any point and to re-run: data is written first and becomes visible
    at one commit (consolidated metadata), grid growth included; a re-run undoes what a
    killed run left uncommitted and completes it; sources already ingested (the same bytes,
    by SHA-256) are skipped. One writer at a time: the ingest holds the store's writer lock.

    Parameters
    ----------
    sources:
        GeoTIFF paths, folders, ``az://`` URLs, globs, or STAC Item/ItemCollection JSON files.
        Band, tile and date come from Sentinel-2 file names
        (``T16TCK_20240615T165849_B04_10m.tif``) or STAC properties unless ``band`` and
        ``time`` say otherwise.
    store:
        Store URL: a local directory (the embedded default), ``az://container/path`` or
        ``memory://name``.
    bands:
        Keep only these bands of Sentinel-2 / STAC sources.
    band, time:
        Name and date for sources whose names do not say (WorldCover, CDL, any GeoTIFF).
    times:
        For multi-band files whose bands are dates (e.g. an NDVI time series): band ``i`` of
        each file is date ``times[i]``, all stored as one band named ``band``.
    scale, offset:
        Reflectance of named layers: stored as ``scale_factor``/``add_offset`` (value =
        DN * scale + offset), used by indices and by xarray's decoding. Default: what the
        STAC item (raster extension) or the GeoTIFF declares, else none.
    force:
        Ingest a file the store already holds under another date or band name (refused
        otherwise, because its data would be stored twice).
    storage_options:
        Options for the store's filesystem (Azure credentials; see :mod:`parcelzarr.stores`).
    source_storage_options:
        Options for ``az://`` sources; default: ``storage_options``.
    chunk_size:
        Object (chunk or shard) edge in pixels for new grids (default 256,
        ``PARCELZARR_CHUNK``).
    inner_chunk:
        With a value below ``chunk_size``, objects are shards of ``inner_chunk``-square chunks
        (index at the start of the object). Default: no sharding.
    workers:
        Threads writing regions in parallel (default: cores, ``PARCELZARR_WORKERS``).
    scheduler:
        Dask distributed scheduler address (or a ``distributed.Client``): regions are written
        by its workers, one task per output region.
    quiet:
        No progress bar.
    lock_timeout:
        Seconds to wait while another ingest or compaction writes the store (default
        ``PARCELZARR_LOCK_WAIT``, 0: fail at once).
    max_growth_px:
        Most pixels one source may add to a grid, creating or growing it (default
        ``PARCELZARR_MAX_GROWTH_PX``, 1e10): a mis-georeferenced file fails up front.

    Returns
    -------
    IngestReport
        Sources written and skipped, bytes and seconds.

    Raises
    ------
    InvalidSourceError, IngestConflictError, SourceNotFoundError, GridGrowthError
        Before anything is written.
    ValueError
        Before anything is written: ``chunk_size``, ``inner_chunk`` or ``workers`` out of range
        (1 to 16,384 px; ``inner_chunk`` must divide the object edge), a ``band`` name that is
        not a name or is reserved, a ``time`` that is not a date.
    StoreLockedError
        Another writer held the store for longer than ``lock_timeout``; nothing was written.

    Examples
    --------
    >>> import parcelzarr as pz
    >>> pz.ingest("scenes/T16TCK_*_B0*_10m.tif", "stores/county.zarr")  # doctest: +SKIP
    """
    t0 = _time.perf_counter()
    if band is not None:
        check_layer_name(band)
    _check_chunking(chunk_size, inner_chunk, workers)
    if times is not None and time is not None:
        raise TypeError("give either time= (one date) or times= (one date per file band)")
    limit: Any = _config.max_growth_px() if max_growth_px is None else max_growth_px
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise TypeError(f"max_growth_px must be a positive int, got {max_growth_px!r}")
    with open_store_handle(store, storage_options) as handle:
        handle.check_reachable()
        src_opts = (source_storage_options if source_storage_options is not None
                    else storage_options)
        band_times = [parse_time(t) for t in times] if times is not None else None
        srcs = discover_sources(
            sources, band=band, time=parse_time(time), bands=bands, scale=scale, offset=offset,
            storage_options=src_opts,
            cache_dir=_config.cache_dir() / "sources", band_times=band_times,  # type: ignore[arg-type]
        )
        chunk = chunk_size or _config.default_chunk()
        hashes: dict[tuple[str, str], str] = {}
        # Check everything against the committed store first, without the lock: bad input
        # leaves the store untouched, and a run with nothing to do writes nothing at all.
        plan, _, _ = _plan(handle, srcs, hashes, chunk, limit, force)
        if not plan.tasks:
            return _nothing_to_do(handle, plan, t0, _finish_cleanup(handle, storage_options))
        with writer_lock(handle, storage_options, wait=lock_timeout) as lock:
            undone = tuple(recover(handle))
            # Plan again from the committed state as it is now, under the lock.
            plan, manifest, grids = _plan(handle, srcs, hashes, chunk, limit, force)
            if not plan.tasks:
                collect(handle)
                return _nothing_to_do(handle, plan, t0, undone)
            # Superseded objects past their grace, or of grids about to be relaid out, go
            # now; a write into committed dates makes queries wait for its commit.
            collect(handle, clobbered=[f"{g}/" for g, gp in plan.grids.items()
                                       if g in grids and gp.spec != grids[g]])
            in_place = _writes_committed_dates(handle, plan, grids)
            if in_place:
                mark_in_place(handle)
            try:
                return _execute(handle, plan, manifest, grids, lock, workers=workers,
                                scheduler=scheduler, storage_options=storage_options,
                                source_storage_options=src_opts, inner_chunk=inner_chunk,
                                quiet=quiet, t0=t0, recovered=undone)
            except Exception:
                rollback(handle, lock)
                if in_place:
                    unmark_in_place(handle, lock)
                raise


def _plan(handle: StoreHandle, sources: Sequence[SourceInfo],
          hashes: dict[tuple[str, str], str], chunk: int,
          max_growth_px: int, force: bool) -> tuple[IngestPlan, Manifest, dict[str, GridSpec]]:
    """Plan against the committed store; sources get their content fingerprints."""
    committed = committed_root(handle)
    grids, present = _existing(committed)
    manifest = Manifest.load(handle)
    hashes.update(manifest.known_hashes())
    srcs = resolve_fingerprints(sources, hashes)
    plan = plan_ingest(
        srcs, existing=grids, existing_bands=present, done=manifest.done(srcs, grid_name_of),
        recorded=manifest.sources, force=force, chunk=chunk, max_growth_px=max_growth_px,
    )
    return plan, manifest, grids


def _finish_cleanup(handle: StoreHandle,
                    storage_options: Mapping[str, Any] | None) -> tuple[str, ...]:
    """A relayout journal left by a run killed after its commit: delete the objects it
    superseded, if no other writer is at work (then it is that writer's journal)."""
    if not handle.exists(RELAYOUT_KEY):
        return ()
    try:
        with writer_lock(handle, storage_options, wait=0):
            undone = tuple(recover(handle))
            collect(handle)
            return undone
    except StoreLockedError:
        return ()


def _writes_committed_dates(handle: StoreHandle, plan: IngestPlan,
                            existing: Mapping[str, GridSpec]) -> bool:
    """Whether ``plan`` writes into the objects of a date some band already holds (in
    place; a grid whose growth moves its chunk keys gets new objects instead)."""
    root = committed_root(handle)
    if root is None:
        return False
    names = {g for g in grid_names(root) if g in existing and chunk_shift(
        existing[g], plan.grids[g].spec if g in plan.grids else existing[g]) == (0, 0)}
    for g in {t.grid for t in plan.tasks} & names:
        group = root[g]
        assert isinstance(group, zarr.Group)
        if "time" not in group:
            continue
        times = set(_time_values(group))
        if any(t.grid == g and t.band in group
               and int(np.datetime64(t.time, "s").astype(np.int64)) in times
               for t in plan.tasks):
            return True
    return False


def _nothing_to_do(handle: StoreHandle, plan: IngestPlan, t0: float,
                   recovered: tuple[str, ...]) -> IngestReport:
    report = IngestReport(handle.url, 0, len(plan.skipped), (), 0, 0, 0,
                          _time.perf_counter() - t0, tuple(s.uri for s in plan.skipped),
                          recovered=recovered)
    logger.info("%s", report)
    return report


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


def _jobs(plan: IngestPlan, prepared: Mapping[str, _Prepared]) -> list[Job]:
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


def _execute(
    handle: StoreHandle,
    plan: IngestPlan,
    manifest: Manifest,
    existing: Mapping[str, GridSpec],
    lock: WriterLock,
    *,
    workers: int | None,
    scheduler: str | Any | None,
    storage_options: Mapping[str, Any] | None,
    source_storage_options: Mapping[str, Any] | None,
    inner_chunk: int | None,
    quiet: bool,
    t0: float,
    recovered: tuple[str, ...],
) -> IngestReport:
    before = handle.counters.snapshot()["bytes_written"]
    root = open_root(handle.store, write=True)
    journal = Journal(journal_writer(handle))
    prepared = {name: _prepare_grid(handle, root, plan, name, existing.get(name), inner_chunk,
                                    journal)
                for name in plan.grids}
    root = open_root(handle.store, write=True)
    names = sorted(set(grid_names(root)) | set(plan.grids))
    jobs = _jobs(plan, prepared)
    itemsize = {i: np.dtype(s.dtype).itemsize for i, s in enumerate(plan.sources)}
    raw_total = sum(t.npixels * itemsize[t.sources[0]] for t in plan.tasks)
    bar = progress(total=raw_total, desc="ingest", unit="B", quiet=quiet, unit_scale=True)
    remaining: dict[int, int] = {}
    for t in plan.tasks:
        for i in t.sources:
            remaining[i] = remaining.get(i, 0) + 1
    n_sources = len(remaining)

    def on_done(job: Job) -> None:
        for it in job.items:
            bar.update(it.task.npixels * itemsize[it.task.sources[0]])
            for i in it.task.sources:
                remaining[i] -= 1
        bar.set_postfix_str(f"sources {sum(v == 0 for v in remaining.values())}/{n_sources}")

    with bar:
        pixels = run_jobs(
            jobs, plan=plan, handle=handle, workers=workers or _config.default_workers(),
            scheduler=scheduler, storage_options=storage_options,
            source_storage_options=source_storage_options, on_done=on_done,
        )
    # Commit: metadata last (a reader sees the new dates and the grown grids only now), with
    # each grid's spec and the footprints of the sources written in the same PUT of its
    # document; then the manifest, then the objects a relayout superseded.
    lock.check()
    grid_of = {i: t.grid for t in plan.tasks for i in t.sources}
    attrs: dict[str, dict[str, Any]] = {"": root_attrs(names)}
    for g, gp in plan.grids.items():
        written = [plan.sources[i] for i, gi in grid_of.items() if gi == g]
        attrs[g] = {**grid_attrs(gp.spec),
                    FOOTPRINT_ATTR: merge_footprints(prepared[g].attrs, footprints(written))}
    grace = _config.snapshot_grace()
    version = commit(handle.store, list(plan.grids), attrs=attrs,
                     invalidate_previous=bool(journal.paths) and grace <= 0)
    for i, g in grid_of.items():
        s = plan.sources[i]
        manifest.record(f"{g}/{s.key}", s)
    manifest.save(handle)
    finish(handle, journal, version, grace)
    report = IngestReport(
        store=handle.url,
        sources_written=len(grid_of),
        sources_skipped=len(plan.skipped),
        grids=tuple(plan.grids),
        tasks=len(plan.tasks),
        pixels=pixels,
        bytes_written=handle.counters.snapshot()["bytes_written"] - before,
        seconds=_time.perf_counter() - t0,
        skipped=tuple(s.uri for s in plan.skipped),
        raw_bytes=raw_total,
        recovered=recovered,
    )
    logger.info("%s", report)
    return report
