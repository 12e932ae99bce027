"""Run write jobs: on threads of this process, or on a Dask distributed cluster.

A job owns a set of output objects (one region of one band, for one time block), so no two
jobs — on any number of threads or machines — ever write the same object.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import zarr
from parcelzarr.stores import StoreHandle, open_store_handle
from parcelzarr.stores._azure import redact
from rasterio.errors import RasterioIOError

from parcelzarr import _config
from parcelzarr._footprint import Footprint
from parcelzarr._grid import GridSpec
from parcelzarr.errors import InvalidSourceError

from ._expand import fetch_source
from ._plan import IngestPlan, RegionTask
from ._sources import SourceInfo
from ._write import write_region

__all__ = ["Job", "JobItem", "run_jobs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobItem:
    """One task of a job: where it writes and what it merges with.

    ``committed`` are the footprints of this band and date already in the store (empty for a
    new date).
    """

    task: RegionTask
    time_index: int
    committed: tuple[Footprint, ...] = ()


@dataclass(frozen=True)
class Job:
    """Tasks of one band writing one region (one time block of it)."""

    grid: str
    band: str
    items: tuple[JobItem, ...]


def _run(job: Job, sources: Sequence[SourceInfo], spec: GridSpec, array: zarr.Array,
         source_storage_options: Mapping[str, Any] | None = None) -> int:
    try:
        return sum(write_region(it.task, sources, spec, array, it.time_index,
                                committed=it.committed,
                                source_storage_options=source_storage_options)
                   for it in job.items)
    except RasterioIOError as exc:  # a block past the ones checked up front is corrupt
        uris = sorted({sources[i].uri for it in job.items for i in it.task.sources})
        raise InvalidSourceError(
            f"cannot read {', '.join(uris)} ({redact(str(exc))[:200]}): nothing of this ingest "
            "was committed; replace the file (download it again) and re-run"
        ) from exc


def _remote(job: Job, url: str, storage_options: Mapping[str, Any] | None,
            source_storage_options: Mapping[str, Any] | None,
            sources: Sequence[SourceInfo | None], spec: GridSpec) -> int:
    """Run ``job`` on a Dask worker: open the store, fetch sources it lacks, write."""
    local: list[SourceInfo | None] = list(sources)
    for i, src in enumerate(local):
        if src is not None and not os.path.exists(src.local_path):
            path = fetch_source(src.uri, source_storage_options,
                                _config.cache_dir() / "sources")
            local[i] = dataclasses.replace(src, local_path=path)
    with open_store_handle(url, storage_options) as handle:
        arr = zarr.open_array(handle.store, path=f"{job.grid}/{job.band}", mode="r+",
                              zarr_format=3, config={"write_empty_chunks": False})
        return _run(job, local, spec, arr,  # type: ignore[arg-type]
                    source_storage_options)


def run_jobs(
    jobs: Sequence[Job],
    *,
    plan: IngestPlan,
    handle: StoreHandle,
    workers: int,
    scheduler: str | Any | None,
    storage_options: Mapping[str, Any] | None,
    source_storage_options: Mapping[str, Any] | None,
    on_done: Callable[[Job], None],
) -> int:
    """Run every job; returns the pixels written."""
    if scheduler is not None:
        return _run_dask(jobs, plan=plan, url=handle.url, scheduler=scheduler,
                         storage_options=storage_options,
                         source_storage_options=source_storage_options, on_done=on_done)
    arrays: dict[tuple[str, str], zarr.Array] = {}
    for job in jobs:
        if (job.grid, job.band) not in arrays:
            arrays[(job.grid, job.band)] = zarr.open_array(
                handle.store, path=f"{job.grid}/{job.band}", mode="r+", zarr_format=3,
                config={"write_empty_chunks": False})
    pixels = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_run, job, plan.sources, plan.grids[job.grid].spec,
                        arrays[(job.grid, job.band)], source_storage_options): job
            for job in jobs
        }
        try:
            for fut in as_completed(futures):
                pixels += fut.result()
                on_done(futures[fut])
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a failed run starts no further job
            raise
    return pixels


def _run_dask(jobs: Sequence[Job], *, plan: IngestPlan, url: str, scheduler: str | Any,
              storage_options: Mapping[str, Any] | None,
              source_storage_options: Mapping[str, Any] | None,
              on_done: Callable[[Job], None]) -> int:
    from distributed import Client
    from distributed import as_completed as dask_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = []
        for job in jobs:
            used = {i for it in job.items for i in it.task.sources}
            # Ship only the sources the job reads (by index), not the whole plan.
            srcs = [s if i in used else None for i, s in enumerate(plan.sources)]
            fut = client.submit(_remote, job, url, storage_options, source_storage_options,
                                srcs, plan.grids[job.grid].spec, pure=False)
            futures.append(fut)
        by_key = {f.key: j for f, j in zip(futures, jobs, strict=True)}
        pixels = 0
        for fut in dask_completed(futures):
            pixels += int(fut.result())
            on_done(by_key[fut.key])
        return pixels
    finally:
        if client is not scheduler:
            client.close()
