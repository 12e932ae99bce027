"""Grow a grid in any direction, keeping its chunk lattice (see :mod:`._relayout`).

East/south growth changes only array shapes. West/north growth moves the origin by whole
lattice steps, so every chunk object moves by the same whole number of chunks: the objects are
copied (bytes, not decoded) to their new keys under the other key separator, then swapped in.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from parcelzarr._grid import GridSpec
from parcelzarr._layout import geotransform, grid_attrs, other_separator

from ._relayout import (
    ArrayChange,
    clear_other,
    copy_shifted,
    finish_relayout,
    read_doc,
    separator_of,
    staged_array,
    with_separator,
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
              *, journal: Any) -> int:
    """Grow grid ``name`` from ``old`` to ``new``; returns the chunk objects copied."""
    dy, dx = chunk_shift(old, new)
    moved = 0
    changes = []
    for band in bands:
        path = f"{name}/{band}"
        doc = read_doc(store, path)
        sep = separator_of(doc)
        if (dy, dx) != (0, 0):
            clear_other(store, path, sep)
            sep = other_separator(sep)
            moved += copy_shifted(store, path, separator_of(doc), sep, (0, dy, dx))
        grown = with_separator(doc, sep)
        grown["shape"] = [doc["shape"][0], new.height, new.width]
        changes.append(ArrayChange(path, grown))
    for dim, values in (("x", new.x_coords()), ("y", new.y_coords())):
        path = f"{name}/{dim}"
        doc = read_doc(store, path)
        clear_other(store, path, separator_of(doc))
        grown = with_separator(doc, other_separator(separator_of(doc)))
        grown["shape"] = [len(values)]
        staged_array(store, path, grown)[:] = np.asarray(values)
        changes.append(ArrayChange(path, grown))
    finish_relayout(
        store, changes, group_attrs={name: grid_attrs(new)},
        array_attrs={f"{name}/spatial_ref": {"GeoTransform": geotransform(new)}},
        grids=[name], journal=journal,
    )
    logger.info("grew grid %s from %sx%s to %sx%s px (%d chunk objects moved)", name,
                old.width, old.height, new.width, new.height, moved)
    return moved
