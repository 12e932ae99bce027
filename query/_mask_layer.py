"""Which layer masks a query, and which of its values are excluded (pure).

``mask=True`` or ``"scl"`` is Sentinel-2's scene classification band ``SCL`` with its cloud,
shadow, cirrus and no-data classes by default. Any other layer of the store masks as well
(``mask="CLM"`` with ``mask_classes=[1]``: eo-learn's / Sentinel Hub's cloud mask, Fmask,
a QA band, a land-cover map): its values to exclude must then be named, there is no default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from parcelzarr._sentinel2 import DEFAULT_MASK_CLASSES
from parcelzarr.errors import BandNotFoundError

__all__ = ["DEFAULT_MASK_CLASSES", "resolve_mask"]



def resolve_mask(mask: bool | str | None, mask_classes: Iterable[int] | None,
                 bands: Sequence[str]) -> tuple[str | None, np.ndarray]:
    """The mask band and the sorted values it excludes, for ``mask`` and ``mask_classes``.

    Raises
    ------
    BandNotFoundError
        ``mask="scl"`` on a store without an SCL band.
    ValueError
        The mask layer is not among ``bands`` (the store's), ``mask_classes`` without a
        mask, a layer other than SCL without ``mask_classes``, or classes that are not whole
        numbers.
    TypeError
        ``mask`` is neither a bool, None nor a layer name.
    """
    if mask is None or mask is False:
        if mask_classes is not None:
            raise ValueError("mask_classes= (CLI --mask-classes) needs mask= (CLI --mask): "
                             "name the layer whose classes are masked, e.g. mask='scl'")
        return None, np.empty(0, dtype=np.int64)
    if not (mask is True or isinstance(mask, str)):
        raise TypeError(f"mask must be True, 'scl' or a layer name, got {type(mask).__name__}")
    scl = mask is True or mask.lower() == "scl"
    if scl:
        if "SCL" not in bands:
            raise BandNotFoundError(
                "mask='scl' needs the Sentinel-2 scene classification band SCL, which the "
                f"store does not hold (bands: {list(bands)}); ingest the SCL_20m files, or "
                "name another mask layer with mask='NAME', mask_classes=[...]")
        band = "SCL"
    else:
        assert isinstance(mask, str)  # for mypy: True is SCL
        if mask not in bands:  # a ValueError, as an unknown mask= value always was
            raise ValueError(f"mask={mask!r}: no such layer in the store; use True, 'scl' or "
                             f"one of its layers {list(bands)}")
        band = mask
    if mask_classes is None:
        if not scl:
            raise ValueError(f"mask={mask!r} needs mask_classes= (CLI --mask-classes): the "
                             f"values of {band} to exclude, e.g. [1] for a cloud mask")
        mask_classes = DEFAULT_MASK_CLASSES
    values = list(mask_classes)
    if not values:
        raise ValueError(f"mask_classes for mask={mask!r} is empty: name at least one value "
                         "to exclude, or drop the mask")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"mask_classes must be whole numbers, got {values!r}")
    return band, np.asarray(sorted({int(v) for v in values}), dtype=np.int64)
