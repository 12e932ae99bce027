"""The commit point of every write: the root's consolidated metadata.

A store's root ``zarr.json`` holds, besides its own attributes, the metadata of every group
and array below it (Zarr's consolidated metadata). Readers open it, so whatever a writer did
below becomes visible in one step, when that one document is replaced: that PUT *is* the
commit. Each grid group's ``zarr.json`` holds a copy of its part (for readers that open one
grid directly, e.g. ``xr.open_zarr(url, group="utm16n/10m")``); it is written right after the
root (before it, for a new grid), from the same snapshot; a writer that finds it out of step
with the root rewrites it from the root (see :mod:`parcelzarr._ingest._recover`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from zarr import AsyncGroup
from zarr.buffer import default_buffer_prototype
from zarr.storage import StorePath

from parcelzarr._snapshot import SNAPSHOT_ATTR, next_attr, snapshot_of

from ._zarr_compat import ConsolidatedMetadata, GroupMetadata, nest_consolidated, sync

__all__ = ["Tree", "commit", "doc_json", "group_document", "live_tree", "write_metadata"]

#: Metadata of a store by node path (``""`` is the root), as in consolidated metadata.
Tree = dict[str, Any]


async def _live_tree(store: Any) -> tuple[Tree, set[str]]:
    """Live metadata by path (groups without their consolidated copy), and the groups that
    had one (committed before)."""
    root = await AsyncGroup.open(StorePath(store, ""), zarr_format=3, use_consolidated=False)
    tree: Tree = {"": root.metadata}
    consolidated: set[str] = set()
    todo = [("", root)]
    while todo:  # level by level: zarr's deep walk trusts grandchildren's consolidated copy
        path, group = todo.pop()
        async for name, node in group.members(max_depth=0):
            key = f"{path}/{name}" if path else name
            if isinstance(node, AsyncGroup):
                if node.metadata.consolidated_metadata is not None:
                    consolidated.add(key)
                node = dataclasses.replace(node, metadata=dataclasses.replace(
                    node.metadata, consolidated_metadata=None))
                todo.append((key, node))
            tree[key] = node.metadata
    return tree, consolidated


def _read_live(store: Any) -> tuple[Tree, set[str]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        warnings.filterwarnings("ignore", message="Object at .* is not recognized",
                                category=UserWarning)
        return sync(_live_tree(store))


def live_tree(store: Any) -> Tree:
    """Every node's live ``zarr.json`` (what writers see), by path."""
    return _read_live(store)[0]


def group_document(tree: Mapping[str, Any], path: str) -> GroupMetadata:
    """The ``zarr.json`` of group ``path`` carrying the consolidated metadata of its subtree."""
    prefix = f"{path}/" if path else ""
    members: dict[str, Any] = {}
    for key, meta in tree.items():
        if key == path or not key.startswith(prefix):
            continue
        if isinstance(meta, GroupMetadata):
            meta = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata({}))
        members[key[len(prefix):]] = meta
    nest_consolidated(members)
    return dataclasses.replace(tree[path], consolidated_metadata=ConsolidatedMetadata(members))


def doc_json(meta: Any) -> Any:
    """A node's metadata as the JSON its ``zarr.json`` holds (for comparisons)."""
    buf = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"]
    return json.loads(buf.to_bytes())


def write_metadata(store: Any, path: str, meta: Any) -> None:
    """Replace the ``zarr.json`` of the node at ``path`` with ``meta``."""
    buf = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"]
    sync(store.set(f"{path}/zarr.json" if path else "zarr.json", buf))


def commit(store: Any, grids: Sequence[str], *,
           attrs: Mapping[str, Mapping[str, Any]] | None = None,
           intact_from: int | None = None, invalidate_previous: bool = False) -> int:
    """Publish the live metadata: the root document is the commit.

    Data written before this call stays invisible to readers until the root's ``zarr.json``
    is replaced. ``grids`` get their own documents too: a grid never committed before gets it
    *before* the root (no reader looks at a grid the root does not list, and one the root
    lists always has its document), a committed grid right *after* it (until then readers
    of that grid alone see its previous commit, whose objects are all still there).

    Group attributes that change with a write (the root's grid list, a grown grid's spec)
    are passed as ``attrs`` (group path -> attributes, ``""`` for the root) and written in
    the same documents: a writer never rewrites a committed group document otherwise,
    because those documents *are* the commit record.

    The root also gets the next version (:mod:`parcelzarr._snapshot`): ``intact_from``
    raises the oldest version readers may still read whole, ``invalidate_previous`` sets it
    to this commit (the caller deletes what older versions read right after). Returns the
    new version.
    """
    tree, committed = _read_live(store)
    root_attrs = tree[""].attributes
    snap = next_attr(snapshot_of(root_attrs), intact_from=intact_from,
                     invalidate_previous=invalidate_previous)
    tree[""] = dataclasses.replace(tree[""], attributes={**root_attrs, SNAPSHOT_ATTR: snap})
    for path, extra in (attrs or {}).items():
        meta = tree[path]
        tree[path] = dataclasses.replace(meta, attributes={**meta.attributes, **extra})
    new = [g for g in grids if g not in committed]
    for path in [*new, "", *(g for g in grids if g in committed)]:
        write_metadata(store, path, group_document(tree, path))
    return int(snap["version"])
