"""``ingest()``: sources in, parcel-sized Zarr chunks out (the orchestration; I/O lives here)."""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import StoreHandle, open_store_handle, writer_lock

from parcelzarr import _config
from parcelzarr._dates import parse_time
from parcelzarr._grid import GridSpec
from parcelzarr._layout import grid_names
from parcelzarr.errors import StoreLockedError

from ._discover import discover_sources
from ._execute import execute
from ._fingerprint import resolve_fingerprints
from ._grow import chunk_shift
from ._manifest import Manifest
from ._names import check_layer_name
from ._plan import IngestPlan, grid_name_of, plan_ingest
from ._prepare import existing_grids, time_values
from ._recover import committed_root, recover, rollback
from ._relayout import RELAYOUT_KEY
from ._report import IngestReport
from ._retire import collect, mark_in_place, unmark_in_place
from ._sources import SourceInfo

__all__ = ["IngestReport", "ingest"]

logger = logging.getLogger(__name__)

#: Largest object (chunk or shard) edge accepted, in pixels.
MAX_CHUNK = 16384


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
                return execute(handle, plan, manifest, grids, lock, workers=workers,
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
    grids, present = existing_grids(committed)
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
        times = set(time_values(group))
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
