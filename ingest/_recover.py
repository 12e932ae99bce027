"""Undo what a killed run left uncommitted, so the live store equals the committed one.

The commit point is the consolidated metadata (:func:`parcelzarr._layout.commit`). Whatever
the live metadata holds beyond it was written by a run that did not finish: grids and arrays
that are not committed are deleted, and time slots past the committed length are cleared
(their chunk objects deleted, or filled with nodata where a compacted time block also holds
committed dates) and cut off. A later run therefore never commits junk it did not write.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import zarr
from parcelzarr.stores import StoreHandle
from zarr.core.sync import sync

from parcelzarr._layout import grid_names, open_live, open_root

from ._relayout import RELAYOUT_KEY, chunk_keys, delete_keys, read_doc, recover_relayout

__all__ = ["committed_root", "journal_writer", "recover"]

logger = logging.getLogger(__name__)


def committed_root(handle: StoreHandle) -> zarr.Group | None:
    """The committed (consolidated) view of the store, or None if nothing was committed."""
    if not handle.exists("zarr.json"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = open_root(handle.store)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return root if root.metadata.consolidated_metadata is not None else None


def journal_writer(handle: StoreHandle) -> Any:
    """A function that writes (or, given None, deletes) the relayout journal."""

    def write(record: Any) -> None:
        if record is None:
            sync(handle.store.delete(RELAYOUT_KEY))
        else:
            handle.write_json(RELAYOUT_KEY, record)

    return write


def _delete_prefix(handle: StoreHandle, prefix: str) -> None:
    async def listing() -> list[str]:
        return [k async for k in handle.store.list_prefix(prefix + "/")]

    delete_keys(handle.store, sync(listing()))


def _truncate(handle: StoreHandle, live: zarr.Array, path: str, keep: int) -> None:
    """Clear time slots ``keep:`` of the band array at ``path`` and cut them off."""
    doc = read_doc(handle.store, path)
    tc = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])
    sep = str(doc["chunk_key_encoding"]["configuration"]["separator"])
    first_free = math.ceil(keep / tc)
    keys = chunk_keys(handle.store, path, sep)
    delete_keys(handle.store, [k for k, c in keys if c[0] >= first_free])
    if keep % tc:  # a time block shared with committed dates: fill the dead slots
        block = keep // tc
        _, cy, cx = doc["chunk_grid"]["configuration"]["chunk_shape"]
        for _k, c in keys:
            if c[0] == block:
                live[keep:min(live.shape[0], (block + 1) * tc),
                     c[1] * cy:(c[1] + 1) * cy, c[2] * cx:(c[2] + 1) * cx] = live.fill_value
    sync(live._async_array.resize((keep, *live.shape[1:]), delete_outside_chunks=False))


def recover(handle: StoreHandle) -> list[str]:
    """Bring the live store back to its committed state; returns what was undone."""
    undone: list[str] = []
    journal = journal_writer(handle)
    if recover_relayout(handle.store, handle.read_json(RELAYOUT_KEY), journal):
        undone.append("finished an interrupted relayout")
    if not handle.exists("zarr.json"):
        return undone
    live_root = open_root(handle.store, write=True)
    committed = committed_root(handle)
    live_grids = grid_names(live_root)
    done_grids = grid_names(committed) if committed is not None else []
    for name in live_grids:
        if name not in done_grids:
            _delete_prefix(handle, name)
            undone.append(f"deleted uncommitted grid {name}")
            continue
        assert committed is not None
        cgroup, lgroup = committed[name], open_live(handle.store, name)
        assert isinstance(cgroup, zarr.Group)
        assert isinstance(lgroup, zarr.Group)
        cnames = {k for k, _ in cgroup.arrays()}
        for key, arr in lgroup.arrays():
            path = f"{name}/{key}"
            if key not in cnames:
                _delete_prefix(handle, path)
                undone.append(f"deleted uncommitted array {path}")
                continue
            if arr.ndim == 0:
                continue
            carr = cgroup[key]
            assert isinstance(carr, zarr.Array)
            keep = carr.shape[0]
            if arr.ndim == 3 and arr.shape[0] > keep:
                _truncate(handle, arr, path, keep)
                undone.append(f"cleared {arr.shape[0] - keep} uncommitted date(s) of {path}")
            elif key == "time" and arr.shape[0] > keep:
                sync(arr._async_array.resize((keep,), delete_outside_chunks=False))
    for line in undone:
        logger.warning("recovery: %s", line)
    return undone
