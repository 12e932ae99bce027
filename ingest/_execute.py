"""Run a planned ingest under the writer lock: prepare the grids, write every region, then
commit (metadata last), record the manifest and drop what a relayout superseded."""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from typing import Any

import numpy as np
from parcelzarr.stores import StoreHandle, WriterLock

from parcelzarr import _config
from parcelzarr._footprint import FOOTPRINT_ATTR, merge_footprints
from parcelzarr._grid import GridSpec
from parcelzarr._layout import commit, grid_attrs, grid_names, open_root, root_attrs
from parcelzarr._progress import progress

from ._manifest import Manifest
from ._plan import IngestPlan
from ._prepare import footprints, jobs_for, prepare_grid
from ._recover import journal_writer
from ._relayout import Journal
from ._report import IngestReport
from ._retire import finish
from ._run import Job, run_jobs

__all__ = ["execute"]

logger = logging.getLogger(__name__)


def execute(
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
    before = handle.counters.snapshot().bytes_written
    root = open_root(handle.store, write=True)
    journal = Journal(journal_writer(handle))
    prepared = {name: prepare_grid(handle, root, plan, name, existing.get(name), inner_chunk,
                                    journal)
                for name in plan.grids}
    root = open_root(handle.store, write=True)
    names = sorted(set(grid_names(root)) | set(plan.grids))
    jobs = jobs_for(plan, prepared)
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
        bytes_written=handle.counters.snapshot().bytes_written - before,
        seconds=_time.perf_counter() - t0,
        skipped=tuple(s.uri for s in plan.skipped),
        raw_bytes=raw_total,
        recovered=recovered,
    )
    logger.info("%s", report)
    return report
