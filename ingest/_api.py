"""``ingest()``: sources in, parcel-sized Zarr chunks out (the orchestration; I/O lives here)."""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import StoreHandle, open_store_handle

from parcelzarr import _config
from parcelzarr._grid import GridSpec
from parcelzarr._layout import (
    FORMAT_VERSION,
    GRID_ATTR,
    ROOT_ATTR,
    band_info,
    commit,
    create_band,
    create_grid,
    grid_spec,
    open_root,
    resize_grid,
)
from parcelzarr._progress import progress

from ._manifest import Manifest
from ._plan import BandSpec, IngestPlan, plan_ingest
from ._sources import discover_sources
from ._write import write_region

__all__ = ["IngestReport", "ingest", "parse_time"]

logger = logging.getLogger(__name__)


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

    @property
    def mb_per_s(self) -> float:
        """Raw pixel megabytes written per second."""
        return self.pixels * 2 / 1e6 / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        if not self.sources_written:
            return (
                f"{self.store}: nothing to do, {self.sources_skipped} source(s) already ingested"
            )
        return (
            f"{self.store}: wrote {self.sources_written} source(s) into {', '.join(self.grids)} "
            f"({self.tasks} regions, {self.pixels / 1e6:.1f} Mpx, "
            f"{self.bytes_written / 1e6:.1f} MB stored) in {self.seconds:.1f} s; "
            f"skipped {self.sources_skipped} already ingested"
        )


def parse_time(value: str | date | datetime | np.datetime64 | None) -> datetime | None:
    """Normalise a user-given date (``YYYY-MM-DD``, ISO datetime, date, datetime64)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, np.datetime64):
        return datetime.fromisoformat(str(value.astype("datetime64[s]")))
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "")).replace(tzinfo=None)
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a date: use YYYY-MM-DD") from None
    raise TypeError(f"time must be a date string, date or datetime, got {type(value).__name__}")


def _existing(root: zarr.Group) -> tuple[dict[str, GridSpec], dict[str, dict[str, BandSpec]]]:
    grids: dict[str, GridSpec] = {}
    bands: dict[str, dict[str, BandSpec]] = {}
    names = (root.attrs.get(ROOT_ATTR) or {}).get("grids", [])
    for name in names:
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
                bands[name][key] = BandSpec(str(info["dtype"]), info["nodata"])
    return grids, bands


def _time_values(group: zarr.Group) -> list[int]:
    arr = group["time"]
    assert isinstance(arr, zarr.Array)
    return [int(v) for v in np.asarray(arr[:])] if arr.shape[0] else []


def _prepare_grid(
    root: zarr.Group, plan: IngestPlan, name: str, compressor: Any
) -> tuple[zarr.Group, dict[datetime, int], set[datetime]]:
    """Create or grow the grid, its bands and its time axis; returns time indices."""
    gp = plan.grids[name]
    if name in root and GRID_ATTR in root[name].attrs:
        group = root[name]
        assert isinstance(group, zarr.Group)
        bands_present = [k for k, a in group.arrays() if a.ndim == 3]
        resize_grid(group, gp.spec, bands_present)
    else:
        group = create_grid(root, gp.spec)
    times = _time_values(group)
    n_times = len(times)
    for band, bspec in gp.bands.items():
        if band not in group:
            create_band(group, band, dtype=np.dtype(bspec.dtype), nodata=bspec.nodata,
                        n_times=n_times, compressor=compressor, attrs=bspec.attrs)
    index: dict[datetime, int] = {}
    preexisting: set[datetime] = set()
    seconds = {t: int(np.datetime64(t, "s").astype(np.int64)) for t in gp.times}
    new = [t for t in gp.times if seconds[t] not in times]
    for t in gp.times:
        if seconds[t] in times:
            index[t] = times.index(seconds[t])
            preexisting.add(t)
    if new:
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
    return group, index, preexisting


def ingest(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    band: str | None = None,
    time: str | date | datetime | None = None,
    storage_options: Mapping[str, Any] | None = None,
    source_storage_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    workers: int | None = None,
    quiet: bool = False,
) -> IngestReport:
    """Rewrite GeoTIFF bands into parcel-sized Zarr chunks in ``store``.

    Parameters
    ----------
    sources:
        GeoTIFF paths, folders, ``az://`` URLs or globs. Band, tile and date come from
        Sentinel-2 file names (``T16TCK_20240615T165849_B04_10m.tif``) unless ``band`` and
        ``time`` say otherwise.
    store:
        Store URL: a local directory (the embedded default), ``az://container/path`` or
        ``memory://name``.
    bands:
        Keep only these bands of Sentinel-2 sources.
    band, time:
        Name and date for sources whose names do not say (WorldCover, CDL, any GeoTIFF).
    storage_options:
        Options for the store's filesystem (Azure credentials; see :mod:`parcelzarr.stores`).
    source_storage_options:
        Options for ``az://`` sources; default: ``storage_options``.
    chunk_size:
        Chunk edge in pixels for new grids (default 256, ``PARCELZARR_CHUNK``).
    workers:
        Threads writing regions in parallel (default: cores, ``PARCELZARR_WORKERS``).
    quiet:
        No progress bar.

    Returns
    -------
    IngestReport
        Sources written and skipped, bytes and seconds.

    Examples
    --------
    >>> import parcelzarr as pz
    >>> pz.ingest("scenes/T16TCK_*_B0*_10m.tif", "stores/county.zarr")  # doctest: +SKIP
    """
    t0 = _time.perf_counter()
    with open_store_handle(store, storage_options) as handle:
        handle.check_reachable()
        return _ingest(handle, sources, bands=bands, band=band, time=time,
                       storage_options=storage_options,
                       source_storage_options=source_storage_options, chunk_size=chunk_size,
                       workers=workers, quiet=quiet, t0=t0)


def _ingest(
    handle: StoreHandle,
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    bands: Sequence[str] | None,
    band: str | None,
    time: str | date | datetime | None,
    storage_options: Mapping[str, Any] | None,
    source_storage_options: Mapping[str, Any] | None,
    chunk_size: int | None,
    workers: int | None,
    quiet: bool,
    t0: float,
) -> IngestReport:
    src_opts = source_storage_options if source_storage_options is not None else storage_options
    srcs = discover_sources(
        sources, band=band, time=parse_time(time), bands=bands, storage_options=src_opts,
        cache_dir=_config.cache_dir() / "sources",
    )
    root = open_root(handle.store, write=True)
    grids, present = _existing(root)
    manifest = Manifest.load(handle)
    plan = plan_ingest(
        srcs, existing=grids, existing_bands=present, done=manifest.fingerprints(),
        chunk=chunk_size or _config.default_chunk(),
    )
    if not plan.tasks:
        report = IngestReport(handle.url, 0, len(plan.skipped), (), 0, 0, 0,
                              _time.perf_counter() - t0, tuple(s.uri for s in plan.skipped))
        logger.info("%s", report)
        return report
    return _execute(handle, root, plan, manifest, workers=workers, quiet=quiet, t0=t0)


def _execute(
    handle: StoreHandle,
    root: zarr.Group,
    plan: IngestPlan,
    manifest: Manifest,
    *,
    workers: int | None,
    quiet: bool,
    t0: float,
) -> IngestReport:
    before = handle.counters.snapshot()["bytes_written"]
    prepared = {name: _prepare_grid(root, plan, name, None) for name in plan.grids}
    names = sorted(set(root.attrs.get(ROOT_ATTR, {}).get("grids", [])) | set(plan.grids))
    root.attrs[ROOT_ATTR] = {"format": FORMAT_VERSION, "grids": names}
    arrays = {
        (g, b): prepared[g][0][b] for g, gp in plan.grids.items() for b in gp.bands
    }
    n_workers = workers or _config.default_workers()
    pixels = 0
    bar = progress(total=plan.total_pixels, desc="ingest", unit="px", quiet=quiet,
                   unit_scale=True)
    with bar, ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = {
            pool.submit(
                write_region, task, plan.sources, plan.grids[task.grid].spec,
                arrays[(task.grid, task.band)], prepared[task.grid][1][task.time],
                merge_existing=task.time in prepared[task.grid][2],
            ): task
            for task in plan.tasks
        }
        for fut in as_completed(futures):
            n = fut.result()
            pixels += n
            bar.update(n)
    # Commit: metadata last (a reader sees the new dates only now), then the manifest.
    commit(handle.store, list(plan.grids))
    grid_of = {i: t.grid for t in plan.tasks for i in t.sources}
    for i, g in grid_of.items():
        s = plan.sources[i]
        manifest.record(f"{g}/{s.key}", s.uri, s.fingerprint)
    manifest.save(handle)
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
    )
    logger.info("%s", report)
    return report
