"""Spectral indices computed per pixel, in reflectance, before reduction (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["INDICES", "IndexDef"]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class IndexDef:
    """A named index: the bands it reads and its formula over reflectances."""

    name: str
    bands: tuple[str, ...]
    formula: Callable[[Arrays], np.ndarray]
    description: str


INDICES: dict[str, IndexDef] = {
    d.name: d
    for d in (
        IndexDef("ndvi", ("B04", "B08"), lambda r: (r["B08"] - r["B04"]) / (r["B08"] + r["B04"]),
                 "(NIR - Red) / (NIR + Red)"),
        IndexDef(
            "evi", ("B02", "B04", "B08"),
            lambda r: 2.5 * (r["B08"] - r["B04"]) / (r["B08"] + 6 * r["B04"] - 7.5 * r["B02"] + 1),
            "2.5 (NIR - Red) / (NIR + 6 Red - 7.5 Blue + 1)",
        ),
        IndexDef(
            "savi", ("B04", "B08"),
            lambda r: 1.5 * (r["B08"] - r["B04"]) / (r["B08"] + r["B04"] + 0.5),
            "1.5 (NIR - Red) / (NIR + Red + 0.5)",
        ),
        IndexDef("ndwi", ("B03", "B08"), lambda r: (r["B03"] - r["B08"]) / (r["B03"] + r["B08"]),
                 "(Green - NIR) / (Green + NIR)  (McFeeters)"),
    )
}
