"""``compact()``: rechunk band arrays along time, so a parcel's season is a few requests.

Ingest writes one date per object (appending never rewrites an existing date). Reading one
parcel's season then costs one request per date and chunk. Compaction rewrites each band into
objects of ``time_chunk`` dates by the same spatial chunk: the season becomes one request per
spatial chunk. Appends keep working afterwards: a new date lands in its time block (the block's
object is rewritten whole, with the committed dates unchanged).

Safe to interrupt and to re-run: the new objects are written beside the live ones under the
other chunk-key separator and swapped in at one commit (see :mod:`._relayout`). It holds the
store's writer lock throughout, like an ingest.
"""

from __future__ import annotations

import logging
import os
import time as _time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import open_store_handle, writer_lock

from parcelzarr import _config
from parcelzarr._catalogue import read_catalogue
from parcelzarr._layout import commit, other_separator
from parcelzarr._progress import progress
from parcelzarr.errors import StoreNotFoundError

from ._recover import committed_root, journal_writer, recover, rollback
from ._relayout import (
    ArrayChange,
    Journal,
    chunk_keys,
    clear_other,
    read_doc,
    separator_of,
    staged_array,
    with_separator,
    write_doc,
)
from ._retire import collect, finish

__all__ = ["DEFAULT_TIME_CHUNK", "CompactReport", "compact"]

logger = logging.getLogger(__name__)

DEFAULT_TIME_CHUNK = 32


@dataclass(frozen=True)
class CompactReport:
    """What a compaction did."""

    store: str
    arrays: tuple[str, ...]
    objects_before: int
    objects_after: int
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        if not self.arrays:
            return f"{self.store}: nothing to compact"
        return (f"{self.store}: compacted {len(self.arrays)} array(s) "
                f"({', '.join(self.arrays)}): {self.objects_before} -> {self.objects_after} "
                f"objects, {self.bytes_written / 1e6:.1f} MB written in {self.seconds:.1f} s")


def _time_doc(doc: Mapping[str, Any], time_chunk: int, sep: str) -> dict[str, Any]:
    new = with_separator(doc, sep)
    new["chunk_grid"]["configuration"]["chunk_shape"][0] = time_chunk
    for codec in new.get("codecs", []):
        if codec.get("name") == "sharding_indexed":
            codec["configuration"]["chunk_shape"][0] = time_chunk
    return new


def _rechunk(store: Any, path: str, doc: Mapping[str, Any], time_chunk: int,
             workers: int, on_block: Any) -> tuple[ArrayChange, int, int]:
    sep = separator_of(doc)
    clear_other(store, path, sep)
    new_sep = other_separator(sep)
    new_doc = _time_doc(doc, time_chunk, new_sep)
    keys = chunk_keys(store, path, sep)
    spatial = sorted({c[1:] for _, c in keys})
    old = zarr.open_array(store, path=path, mode="r", zarr_format=3)
    new = staged_array(store, path, new_doc)
    n_times = int(doc["shape"][0])
    _, cy, cx = doc["chunk_grid"]["configuration"]["chunk_shape"]

    def block(ij: tuple[int, int]) -> int:
        rows = slice(ij[0] * cy, (ij[0] + 1) * cy)
        cols = slice(ij[1] * cx, (ij[1] + 1) * cx)
        written = 0
        for t0 in range(0, n_times, time_chunk):
            t1 = min(n_times, t0 + time_chunk)
            data = np.asarray(old[t0:t1, rows, cols])
            new[t0:t1, rows, cols] = data
            written += 1
        on_block()
        return written

    with ThreadPoolExecutor(max_workers=workers) as pool:
        after = sum(pool.map(block, spatial))
    return ArrayChange(path, new_doc), len(keys), after


def compact(
    store: str | os.PathLike[str],
    *,
    time_chunk: int = DEFAULT_TIME_CHUNK,
    storage_options: Mapping[str, Any] | None = None,
    workers: int | None = None,
    quiet: bool = False,
    lock_timeout: float | None = None,
) -> CompactReport:
    """Rechunk every band of ``store`` to ``time_chunk`` dates per object.

    Parameters
    ----------
    store:
        Store URL.
    time_chunk:
        Dates per object after compaction (default 32: a season in one object per spatial
        chunk). Arrays already at this time chunk are left alone (re-running is a no-op).
    storage_options:
        Options for the store's filesystem (Azure credentials).
    workers:
        Threads (default: cores).
    quiet:
        No progress bar.
    lock_timeout:
        Seconds to wait for another writer of the store (default ``PARCELZARR_LOCK_WAIT``,
        0: fail at once with :class:`~parcelzarr.errors.StoreLockedError`).

    Returns
    -------
    CompactReport
        Arrays compacted, objects before and after, bytes written, seconds.

    Notes
    -----
    It holds the store's writer lock: an ingest into the same store waits for it, or fails
    with ``StoreLockedError``. Readers may keep reading during a compaction: each query
    reads one committed version whole (superseded objects are kept for
    ``PARCELZARR_SNAPSHOT_GRACE`` seconds; see docs/snapshots.md).

    Examples
    --------
    >>> import parcelzarr as pz
    >>> pz.compact("stores/county.zarr")  # doctest: +SKIP
    """
    if not isinstance(time_chunk, int) or time_chunk < 1:
        raise TypeError(f"time_chunk must be a positive int, got {time_chunk!r}")
    t0 = _time.perf_counter()
    with open_store_handle(store, storage_options) as handle:
        handle.check_reachable()
        if committed_root(handle) is None:
            raise StoreNotFoundError(f"no parcelzarr store at {handle.url}")
        before = handle.counters.snapshot().bytes_written
        with writer_lock(handle, storage_options, wait=lock_timeout) as lock:
            try:
                counts = _compact_locked(handle, lock, time_chunk, workers, quiet)
            except Exception:
                rollback(handle, lock)
                raise
        report = CompactReport(
            store=handle.url, arrays=counts[0], objects_before=counts[1],
            objects_after=counts[2],
            bytes_written=handle.counters.snapshot().bytes_written - before,
            seconds=_time.perf_counter() - t0,
        )
        logger.info("%s", report)
        return report


def _compact_locked(handle: Any, lock: Any, time_chunk: int, workers: int | None,
                    quiet: bool) -> tuple[tuple[str, ...], int, int]:
    recover(handle)
    root = committed_root(handle)
    if root is None:
        raise StoreNotFoundError(f"no parcelzarr store at {handle.url}")
    todo: list[tuple[str, str, dict[str, Any]]] = []
    for name, grid in read_catalogue(root).grids.items():
        for key in grid.bands:
            doc = read_doc(handle.store, f"{name}/{key}")
            if doc["chunk_grid"]["configuration"]["chunk_shape"][0] != time_chunk:
                todo.append((name, key, doc))
    # Superseded objects of the arrays about to be rewritten must go first (and any past
    # their grace period).
    collect(handle, clobbered=[f"{g}/{k}" for g, k, _ in todo])
    grace = _config.snapshot_grace()
    objects_before = objects_after = 0
    journal = Journal(journal_writer(handle))
    bar = progress(total=None, desc="compact", unit="block", quiet=quiet)
    with bar:
        for name in dict.fromkeys(g for g, _, _ in todo):
            items = [(f"{g}/{k}", doc) for g, k, doc in todo if g == name]
            journal.add([p for p, _ in items])
            changes: list[ArrayChange] = []
            for path, doc in items:
                change, n_before, n_after = _rechunk(
                    handle.store, path, doc, time_chunk,
                    workers or _config.default_workers(), lambda: bar.update(1))
                changes.append(change)
                objects_before += n_before
                objects_after += n_after
            for change in changes:
                write_doc(handle.store, change.path, change.doc)
            lock.check()
            version = commit(handle.store, [name], invalidate_previous=grace <= 0)
            finish(handle, journal, version, grace)
    return tuple(f"{g}/{k}" for g, k, _ in todo), objects_before, objects_after

