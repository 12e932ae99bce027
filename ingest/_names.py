"""Band, tile, date and processing baseline from Sentinel-2 file and folder names (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from parcelzarr import _sentinel2 as s2
from parcelzarr._dates import parse_time
from parcelzarr.errors import InvalidSourceError

__all__ = ["LAYER_NAME", "RESERVED_NAMES", "S2Name", "boa_offset", "check_layer_name",
           "is_layer_name", "parse_s2_name"]

#: What a layer (band) name may be: it becomes a Zarr array name, a path segment and a
#: column value, so one safe character set on every file system and object store.
LAYER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
#: Names a grid already uses for its coordinates and metadata (compared case-insensitively,
#: as some file systems do); names starting with ``parcelzarr`` are reserved as well.
RESERVED_NAMES = frozenset({"time", "x", "y", "spatial_ref", "inside"})

_BAND = s2.BAND_PATTERN
_FILE = re.compile(
    rf"^(?:L2A_)?(?P<tile>T\d{{2}}[A-Z]{{3}})_(?P<date>\d{{8}}T\d{{6}})_(?P<band>{_BAND})"
    r"(?:_(?P<res>\d{2})m)?$"
)
_BARE_BAND = re.compile(rf"^(?P<band>{_BAND})(?:_(?P<res>\d{{2}})m)?$")
_TILE = re.compile(r"(?:^|_)T?(?P<tile>\d{2}[A-Z]{3})(?:_|$)")
_DATE = re.compile(r"(?:^|_)(?P<date>\d{8}(?:T\d{6})?)(?:_|$)")
_BASELINE = re.compile(r"_N(?P<baseline>\d{4})_")


@dataclass(frozen=True)
class S2Name:
    """What a Sentinel-2 file name says about its contents."""

    band: str
    tile: str | None
    time: datetime | None
    baseline: str | None = None


def is_layer_name(name: object) -> bool:
    """Whether ``name`` is a usable, unreserved layer name (see :func:`check_layer_name`)."""
    return (isinstance(name, str) and LAYER_NAME.fullmatch(name) is not None
            and name.lower() not in RESERVED_NAMES and not name.lower().startswith("parcelzarr"))


def check_layer_name(name: object, *, what: str = "layer name") -> str:
    """``name`` if it can name a layer, else a one-line :class:`InvalidSourceError` (a
    ``ValueError``) saying why.

    A name is a letter followed by up to 63 letters, digits, ``_`` or ``-``; ``time``, ``x``,
    ``y``, ``spatial_ref``, ``inside`` and names starting with ``parcelzarr`` are reserved.

    Examples
    --------
    >>> check_layer_name("worldcover")
    'worldcover'
    """
    if is_layer_name(name):
        return str(name)
    text = str(name)
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    if isinstance(name, str) and LAYER_NAME.fullmatch(name):
        why = "is reserved (time, x, y, spatial_ref, inside and parcelzarr* name grid parts)"
    else:
        why = (f"is not a valid name ({len(text)} characters): use a letter followed by up to "
               "63 letters, digits, _ or -")
    raise InvalidSourceError(f"{what} {shown} {why}; choose another (--band NAME)")


def _parse_date(text: str) -> datetime:
    when = parse_time(text)  # the basic ISO form of the names: 20240615T165849 or 20240615
    assert when is not None
    return when


def parse_s2_name(path: str) -> S2Name | None:
    """Parse a Sentinel-2 band file name, or a band file in a folder per product.

    Examples
    --------
    >>> parse_s2_name("T16TCK_20240615T165849_B04_10m.tif").band
    'B04'
    >>> parse_s2_name("S2A_16TCK_20240615_0_L2A/B08.tif").tile
    'T16TCK'
    """
    p = PurePosixPath(path.replace("\\", "/"))
    stem = p.name.split(".", 1)[0]
    parents = "/".join(p.parent.parts)
    baseline = m.group("baseline") if (m := _BASELINE.search(parents + "/" + stem)) else None
    if m := _FILE.match(stem):
        return S2Name(m.group("band"), m.group("tile"), _parse_date(m.group("date")), baseline)
    if m := _BARE_BAND.match(stem):
        tile = time = None
        for part in reversed(p.parent.parts):
            base = part.split(".", 1)[0]
            if tile is None and (t := _TILE.search(base)):
                tile = "T" + t.group("tile")
            if time is None and (d := _DATE.search(base)):
                time = _parse_date(d.group("date"))
        return S2Name(m.group("band"), tile, time, baseline)
    return None


def boa_offset(name: S2Name) -> int:
    """BOA_ADD_OFFSET in DN for an L2A band: -1000 from baseline 04.00, else 0
    (:func:`parcelzarr._sentinel2.boa_offset`)."""
    return s2.boa_offset(name.band, baseline=name.baseline, time=name.time)
