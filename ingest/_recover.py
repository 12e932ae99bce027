"""Undo what a killed or failed writer left uncommitted, so the live store equals the committed.

The commit point is the root's consolidated metadata (:mod:`parcelzarr._commit`): it *is* the
committed store. Recovery never changes it; it brings everything else back in line with it:

* grid documents out of step with the root (a commit stopped between the two) are rewritten
  from the root;
* groups and arrays the root does not hold are deleted (a first ingest, a new grid, a new
  band that were not committed);
* every array whose live document differs from the committed one, or that a relayout journal
  names, loses the objects the committed document cannot address: objects under the other
  chunk-key separator (an uncommitted relayout, or the leftovers of a committed one), past
  the committed number of dates, or outside the committed extent; objects partly outside it
  (a time block shared with committed dates, a grid's edge chunks) are cleared there. Then
  its live document is restored.

Every step is idempotent and the document is restored last, so a recovery that is itself
interrupted is simply done again. It runs under the writer lock, before an ingest or a
compaction plans anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from parcelzarr.stores import StoreHandle

from parcelzarr._commit import Tree, doc_json, group_document, write_metadata
from parcelzarr._layout import ROOT_ATTR, open_root
from parcelzarr._zarr_compat import ArrayV3Metadata, GroupMetadata, sync

from ._relayout import (
    RELAYOUT_KEY,
    delete_keys,
    parse_chunk_key,
    read_doc,
    recover_legacy_relayout,
    staged_array,
    write_doc,
)
from ._retire import committed_snapshot, retire, retired_keys

__all__ = ["committed_root", "committed_tree", "journal_writer", "recover", "rollback"]

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


def committed_tree(handle: StoreHandle) -> Tree:
    """Committed metadata by node path (``""``: the root); empty if nothing was committed."""
    root = committed_root(handle)
    if root is None:
        return {}
    consolidated = root.metadata.consolidated_metadata
    assert consolidated is not None
    tree: Tree = {"": root.metadata}
    tree.update(consolidated.flattened_metadata)
    return tree


def journal_writer(handle: StoreHandle) -> Any:
    """A function that writes (or, given None, deletes) the relayout journal."""

    def write(record: Any) -> None:
        if record is None:
            sync(handle.store.delete(RELAYOUT_KEY))
        else:  # with the version its commit follows: recovery tells whether it happened
            record = {**record, "base_version": committed_snapshot(handle).version}
            handle.write_json(RELAYOUT_KEY, record)

    return write


def _list(handle: StoreHandle, prefix: str, *, children: bool) -> list[str]:
    async def listing() -> list[str]:
        if children:
            return [k async for k in handle.store.list_dir(prefix)]
        return [k async for k in handle.store.list_prefix(prefix)]

    return sorted(sync(listing()))


def _live_doc(handle: StoreHandle, path: str, kind: Any) -> dict[str, Any] | None:
    """The live ``zarr.json`` at ``path`` in zarr's own serialisation (None: none, unreadable)."""
    try:
        return dict(doc_json(kind.from_dict(read_doc(handle.store, path))))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _grid_list(tree: Tree) -> list[str]:
    meta = tree[""].attributes.get(ROOT_ATTR) or {} if tree else {}
    return [str(g) for g in meta.get("grids", [])] if isinstance(meta, dict) else []


def _sync_groups(handle: StoreHandle, tree: Tree, undone: list[str]) -> None:
    """Rewrite group documents that differ from the root's record of them."""
    grids = set(_grid_list(tree))
    for path, meta in tree.items():
        if not path or not isinstance(meta, GroupMetadata):
            continue
        live = _live_doc(handle, path, GroupMetadata)
        if path in grids or (live or {}).get("consolidated_metadata"):
            expect = group_document(tree, path)
        else:
            expect = dataclasses.replace(meta, consolidated_metadata=None)
        if live != doc_json(expect):
            write_metadata(handle.store, path, expect)
            undone.append(f"rewrote {path}/zarr.json from the commit")


def _clear_outside(handle: StoreHandle, path: str, doc: Mapping[str, Any],
                   edges: list[tuple[int, ...]], dims: list[int]) -> None:
    """Set the parts of the ``edges`` objects outside ``doc``'s extent (along ``dims``) to
    the fill value where they are not, so that an uncommitted write there never resurfaces
    when the array grows again. Objects that hold nothing there are left untouched."""
    shape = [int(s) for s in doc["shape"]]
    chunk = [int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"]]
    padded = dict(doc)
    padded["shape"] = [math.ceil(s / c) * c for s, c in zip(shape, chunk, strict=True)]
    arr = staged_array(handle.store, path, padded)
    fill = arr.fill_value
    for coords in edges:
        for d in dims:
            if coords[d] != shape[d] // chunk[d]:
                continue
            sel = [slice(c * k, (c + 1) * k) for c, k in zip(coords, chunk, strict=True)]
            sel[d] = slice(shape[d], (coords[d] + 1) * chunk[d])
            outside = np.asarray(arr[tuple(sel)])
            if not (np.all(outside == fill) or (fill != fill and np.all(outside != outside))):
                arr[tuple(sel)] = fill


def _sync_array(handle: StoreHandle, path: str, meta: Any, journalled: bool,
                undone: list[str], kept: set[tuple[str, str]]) -> None:
    """Bring one committed array's objects and live document back to the commit."""
    committed = doc_json(meta)
    live = _live_doc(handle, path, ArrayV3Metadata)
    if live == committed and not journalled:
        return
    sep = str(committed["chunk_key_encoding"]["configuration"]["separator"])
    shape = [int(s) for s in committed["shape"]]
    chunk = [int(c) for c in committed["chunk_grid"]["configuration"]["chunk_shape"]]
    extent = [math.ceil(s / c) for s, c in zip(shape, chunk, strict=True)]
    stale, edges = [], []
    for key in _list(handle, f"{path}/", children=False):  # not "{path}/c": see chunk_keys
        parsed = parse_chunk_key(path, key)
        if parsed is None:
            continue
        key_sep, coords = parsed
        if (path, key_sep) in kept:
            continue  # superseded, kept for readers of older versions (._retire)
        if key_sep != sep or len(coords) != len(shape) or any(
                c >= n for c, n in zip(coords, extent, strict=True)):
            stale.append(key)
        else:
            edges.append(coords)
    delete_keys(handle.store, stale)
    live_shape = [int(s) for s in (live or {}).get("shape", shape)]
    grown = [d for d in range(len(shape)) if len(live_shape) == len(shape)
             and live_shape[d] > shape[d] and shape[d] % chunk[d]]
    live_sep = (live or {}).get("chunk_key_encoding", {}).get("configuration", {}).get(
        "separator", sep)
    if grown and live_sep == sep:
        _clear_outside(handle, path, committed, edges, grown)
    if live != committed:
        write_doc(handle.store, path, committed)
    if len(shape) == 3 and len(live_shape) == 3 and live_shape[0] > shape[0]:
        undone.append(f"cleared {live_shape[0] - shape[0]} uncommitted date(s) of {path}")
    if len(shape) == 3 and live_shape[1:] != shape[1:]:
        undone.append(f"undid the uncommitted growth of {path}")
    if stale:
        undone.append(f"deleted {len(stale)} uncommitted or superseded object(s) of {path}")


def _walk(handle: StoreHandle, tree: Tree, path: str, journal: set[str],
          undone: list[str], kept: set[tuple[str, str]]) -> None:
    """Delete live nodes below group ``path`` that are not committed; sync committed ones."""
    for name in _list(handle, path, children=True):
        if name == "zarr.json" or (not path and name.startswith("parcelzarr-")):
            continue
        child = f"{path}/{name}" if path else name
        meta = tree.get(child)
        if meta is None:
            keys = _list(handle, f"{child}/", children=False)
            delete_keys(handle.store, keys)
            if keys:
                undone.append(f"deleted uncommitted {child} ({len(keys)} object(s))")
        elif isinstance(meta, GroupMetadata):
            _walk(handle, tree, child, journal, undone, kept)
        else:
            _sync_array(handle, child, meta, child in journal, undone, kept)


def recover(handle: StoreHandle) -> list[str]:
    """Bring the live store back to its committed state; returns what was undone.

    Call it only while holding the store's writer lock: what it deletes may otherwise be a
    running writer's uncommitted work.
    """
    undone: list[str] = []
    journal = journal_writer(handle)
    record = handle.read_json(RELAYOUT_KEY)
    if record and "phase" in record:
        recover_legacy_relayout(handle.store, record, journal)
        undone.append("finished an interrupted relayout")
        record = None
    tree = committed_tree(handle)
    _sync_groups(handle, tree, undone)
    arrays = [str(p) for p in (record or {}).get("arrays", [])]
    snap = committed_snapshot(handle)
    if (record and "base_version" in record and snap.version > int(record["base_version"])
            and not snap.intact_from >= snap.version):
        # The relayout was committed, its old objects not yet retired: keep them for readers.
        retire(handle, [p for p in arrays if p in tree], snap)
    _walk(handle, tree, "", set(arrays), undone, retired_keys(handle))
    if record is not None:
        journal(None)
    for line in undone:
        logger.warning("recovery: %s", line)
    return undone


def rollback(handle: StoreHandle, lock: Any) -> None:
    """After a failed write: undo it now if the writer ``lock`` is still ours (else another
    writer may own what is uncommitted; the next run's recovery does it)."""
    if not lock.held:
        return
    try:
        recover(handle)
    except Exception as exc:  # never mask the error that made us roll back
        logger.error("could not undo the failed write (%s: %s); the next ingest or "
                     "compaction will", type(exc).__name__, str(exc)[:200])
