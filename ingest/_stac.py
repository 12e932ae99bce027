"""STAC Items and ItemCollections (JSON files) as ingest sources.

Assets are picked by key as Microsoft Planetary Computer's ``sentinel-2-l2a`` collection names
them (``B02``, ``B03``, ``B04``, ``B08``, ``SCL``, ...); the date comes from ``datetime``, the
tile from ``s2:mgrs_tile`` and the processing baseline from ``s2:processing_baseline``.
Relative asset hrefs resolve against the JSON file's location. A reflectance scale and offset
declared by the raster extension (``raster:bands[0].scale``/``offset`` in v1, ``raster:scale``/
``raster:offset`` on the asset or its first ``bands`` entry in v2) is read when present.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from parcelzarr.stores import parse_location
from parcelzarr.stores._open import filesystem_for

from parcelzarr import _sentinel2 as s2
from parcelzarr._dates import parse_time
from parcelzarr.errors import InvalidSourceError

__all__ = ["StacAsset", "asset_scaling", "is_stac_path", "parse_stac", "stac_sources"]

_ASSET = re.compile(rf"^({s2.STAC_ASSET_PATTERN})$")


@dataclass(frozen=True)
class StacAsset:
    """One band file named by a STAC item."""

    href: str
    band: str
    time: datetime
    tile: str | None
    baseline: str | None
    scale: float | None = None
    offset: float | None = None


def is_stac_path(uri: str) -> bool:
    """Whether ``uri`` names a STAC JSON document."""
    return uri.lower().endswith((".json", ".geojson"))


def _resolve(href: str, base: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))}"
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))


def parse_stac(doc: Mapping[str, Any], base: str,
               bands: set[str] | None = None) -> Iterator[StacAsset]:
    """The band assets of an Item or ItemCollection document (pure)."""
    kind = doc.get("type")
    if kind == "FeatureCollection":
        items = list(doc.get("features", []))
    elif kind == "Feature":
        items = [doc]
    else:
        raise InvalidSourceError(f"{base} is not a STAC Item or ItemCollection (type {kind!r})")
    for item in items:
        props = item.get("properties", {})
        raw = props.get("datetime") or props.get("start_datetime")
        if not raw:
            raise InvalidSourceError(f"STAC item {item.get('id')!r} in {base} has no datetime")
        when = parse_time(str(raw))
        assert when is not None
        tile = props.get("s2:mgrs_tile")
        baseline = props.get("s2:processing_baseline")
        for key, asset in sorted(item.get("assets", {}).items()):
            if not _ASSET.match(key) or (bands is not None and key not in bands):
                continue
            scale, offset = asset_scaling(asset)
            yield StacAsset(
                href=_resolve(str(asset["href"]), base), band=key, time=when,
                tile=f"T{tile}" if tile and not str(tile).startswith("T") else tile,
                baseline=str(baseline).replace(".", "") if baseline else None,
                scale=scale, offset=offset,
            )


def asset_scaling(asset: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``(scale, offset)`` an asset declares through the STAC raster extension (pure).

    v2 (STAC 1.1): ``raster:scale``/``raster:offset`` on the asset or on its first ``bands``
    entry; v1: ``scale``/``offset`` of the first ``raster:bands`` entry. ``None`` where absent.
    """
    candidates: list[tuple[Mapping[str, Any], str]] = [(asset, "raster:")]
    for key, prefix in (("bands", "raster:"), ("raster:bands", "")):
        entries = asset.get(key)
        if isinstance(entries, list) and entries and isinstance(entries[0], Mapping):
            candidates.append((entries[0], prefix))
    scale = offset = None
    for entry, prefix in candidates:
        if scale is None and entry.get(prefix + "scale") is not None:
            scale = float(entry[prefix + "scale"])
        if offset is None and entry.get(prefix + "offset") is not None:
            offset = float(entry[prefix + "offset"])
    return scale, offset


def stac_sources(uri: str, *, storage_options: Mapping[str, Any] | None = None,
                 bands: set[str] | None = None) -> list[StacAsset]:
    """Read the STAC JSON at ``uri`` and list its band assets."""
    loc = parse_location(uri)
    fs = filesystem_for(loc, storage_options if loc.protocol == "az" else None)
    try:
        with fs.open(loc.path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise InvalidSourceError(f"cannot read STAC JSON {uri}: {exc}") from exc
    return list(parse_stac(doc, uri, bands))
