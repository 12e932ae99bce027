"""One source to ingest: a single-band raster as read from its header (:class:`SourceInfo`).

Finding sources is :mod:`._expand`, reading headers :mod:`._inspect`, both together
:mod:`._discover`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["SourceInfo"]


@dataclass(frozen=True)
class SourceInfo:
    """One single-band raster to ingest, as read from its header.

    Attributes
    ----------
    uri:
        Where it came from (local path or ``az://`` URL), credential-free.
    local_path:
        The file rasterio opens (the source itself, or a cached download of a blob).
    band, tile, time:
        Band name, tile id (may be None) and acquisition time.
    band_index:
        1-based band of the file to read.
    crs_wkt, transform, width, height, dtype, nodata:
        Georeferencing and pixel type from the header.
    fingerprint:
        What the manifest records of the file's content: ``"sha256:<hex>"`` of its bytes once
        :func:`parcelzarr.ingest` has resolved it (see ``stamp``), the stamp before.
        An ingest skips a source whose fingerprint is recorded under its key.
    attrs:
        Band attributes to store (``scale_factor``/``add_offset`` for Sentinel-2 reflectance).
    dn_shift:
        Added to valid pixels when written: +1000 for Sentinel-2 L2A reflectance from
        processing baselines before 04.00, so every date of a band is stored in the current
        convention (reflectance = (DN - 1000) / 10000). See :func:`boa_offset`.
    south_up:
        The file's rows run south to north (positive pixel height); ``transform`` is then the
        equivalent north-up one and rows are flipped when read.
    stamp:
        Size and modification time (local files, ns) or ETag (blobs): cheap to read, it
        tells whether a file is the very one a manifest entry was hashed from.
    """

    uri: str
    local_path: str
    band: str
    tile: str | None
    time: datetime
    band_index: int
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    dtype: str
    nodata: float | int | None
    fingerprint: str
    attrs: Mapping[str, Any]
    dn_shift: int = 0
    south_up: bool = False
    stamp: str = ""
    masked: bool = False

    @property
    def res(self) -> tuple[float, float]:
        """(x, y) pixel size, both positive."""
        a, _, _, _, e, _ = self.transform
        return (abs(a), abs(e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top)."""
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)

    @property
    def tile_id(self) -> str:
        """The tile id, or the file name for sources without one: unique per band and date,
        and the source's priority where sources of one band and date overlap."""
        return self.tile or Path(self.uri).name

    @property
    def key(self) -> str:
        """Identity in the manifest: band, time and tile (or file name)."""
        return f"{self.band}/{self.time.isoformat()}/{self.tile_id}"


