"""Grow a grid in any direction, keeping its chunk lattice (see :mod:`._relayout`).

East/south growth changes only array shapes. West/north growth moves the origin by whole
lattice steps, so every chunk object moves by the same whole number of chunks: the objects are
copied (bytes, not decoded) to their new keys under the other key separator. Either way only
the *live* documents change here: the grown grid becomes visible at the ingest's commit,
together with its data, so an ingest that fails or is killed leaves the committed grid as it
was (recovery undoes the live part).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from parcelzarr._grid import GridSpec
from parcelzarr._layout import geotransform, other_separator

from ._relayout import (
    Journal,
    clear_other,
    copy_shifted,
    read_doc,
    separator_of,
    staged_array,
    with_separator,
    write_doc,
)

__all__ = ["chunk_shift", "grow_grid"]

logger = logging.getLogger(__name__)


def chunk_shift(old: GridSpec, new: GridSpec) -> tuple[int, int]:
    """Whole chunks by which ``old``'s chunks move in ``new`` (rows, cols; both >= 0)."""
    rows, cols = new.offset_of(old)
    if rows % old.chunk_y or cols % old.chunk_x or rows < 0 or cols < 0:
        raise ValueError(f"{new} is not a lattice-aligned growth of {old}")
    return rows // old.chunk_y, cols // old.chunk_x


def grow_grid(store: Any, name: str, old: GridSpec, new: GridSpec, bands: list[str],
              *, journal: Journal) -> int:
    """Grow grid ``name`` from ``old`` to ``new`` in its live documents; returns the chunk
    objects copied.

    The arrays relaid out are added to ``journal``; their old objects are deleted by
    :meth:`Journal.finish` after the commit.
    """
    dy, dx = chunk_shift(old, new)
    shifted = (dy, dx) != (0, 0)
    relaid = [f"{name}/{b}" for b in bands] if shifted else []
    relaid += [f"{name}/x", f"{name}/y"]
    docs = {}
    for band in bands:
        path = f"{name}/{band}"
        docs[path] = doc = read_doc(store, path)
        if list(doc["shape"][1:]) != [old.height, old.width]:
            raise RuntimeError(
                f"{path} is {doc['shape'][1:]} px in the live store but grid {name} is "
                f"{[old.height, old.width]}: the store was changed behind this ingest; re-run "
                "it (recovery restores the committed state first)")
    journal.add(relaid)
    moved = 0
    for path, doc in docs.items():
        sep = separator_of(doc)
        if shifted:
            clear_other(store, path, sep)
            sep = other_separator(sep)
            moved += copy_shifted(store, path, separator_of(doc), sep, (0, dy, dx))
        grown = with_separator(doc, sep)
        grown["shape"] = [doc["shape"][0], new.height, new.width]
        write_doc(store, path, grown)
    for dim, values in (("x", new.x_coords()), ("y", new.y_coords())):
        path = f"{name}/{dim}"
        doc = read_doc(store, path)
        clear_other(store, path, separator_of(doc))
        grown = with_separator(doc, other_separator(separator_of(doc)))
        grown["shape"] = [len(values)]
        staged_array(store, path, grown)[:] = np.asarray(values)
        write_doc(store, path, grown)
    ref = read_doc(store, f"{name}/spatial_ref")
    ref["attributes"] = {**ref.get("attributes", {}), "GeoTransform": geotransform(new)}
    write_doc(store, f"{name}/spatial_ref", ref)
    logger.info("growing grid %s from %sx%s to %sx%s px (%d chunk objects copied)", name,
                old.width, old.height, new.width, new.height, moved)
    return moved
