"""Discover ingest sources: expand them, read STAC items, inspect every file (all before an
ingest writes anything)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from parcelzarr.errors import SourceNotFoundError

from ._expand import expand_sources
from ._inspect import inspect_source
from ._names import parse_s2_name
from ._sources import SourceInfo
from ._stac import is_stac_path, stac_sources

__all__ = ["discover_sources"]


def discover_sources(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    band: str | None = None,
    time: datetime | None = None,
    band_times: Sequence[datetime] | None = None,
    bands: Iterable[str] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Expand ``sources`` (files, globs, STAC JSON) and inspect every file.

    Keeps only ``bands`` when given (bands of multi-band files included). ``scale`` and
    ``offset`` declare the reflectance of named layers. Every source is read and checked here,
    before an ingest writes anything.
    """
    wanted = set(bands) if bands is not None else None
    result: list[SourceInfo] = []
    held: set[str] = set()  # band names the sources offer, as ``bands`` names them
    for uri in expand_sources(sources, storage_options):
        if is_stac_path(uri):
            for asset in stac_sources(uri, storage_options=storage_options, bands=wanted):
                held.add(asset.band)
                result.extend(inspect_source(
                    asset.href, band=band or asset.band, time=time or asset.time,
                    tile=asset.tile, baseline=asset.baseline, s2=band is None,
                    scale=scale, offset=offset, stac_scaling=(asset.scale, asset.offset),
                    storage_options=storage_options, cache_dir=cache_dir,
                ))
            continue
        name = parse_s2_name(uri)
        if wanted is not None and band is None and name is not None and name.band not in wanted:
            held.add(name.band)
            continue
        found = inspect_source(
            uri, band=band, time=time, band_times=band_times, scale=scale, offset=offset,
            storage_options=storage_options, cache_dir=cache_dir,
        )
        held.update(s.band for s in found)
        if wanted is not None and len({s.band for s in found}) > 1:
            found = [s for s in found if s.band in wanted]  # the bands of a multi-band file
        result.extend(found)
    if wanted is not None:
        missing = wanted - held
        if missing:
            raise SourceNotFoundError(
                f"no source found for band(s) {sorted(missing)}; sources hold {sorted(held)}"
            )
    return result
