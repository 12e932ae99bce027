"""Discover ingest sources: expand paths, URLs and globs; read and validate GeoTIFF headers."""

from __future__ import annotations

import glob as globlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from parcelzarr.stores import filesystem_for, parse_location, redact
from rasterio.errors import RasterioIOError

from parcelzarr.errors import InvalidSourceError, SourceNotFoundError

from ._names import boa_offset, parse_s2_name

__all__ = ["SourceInfo", "discover_sources", "expand_sources", "inspect_source"]

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


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
        Size and modification stamp; an ingest skips a source whose fingerprint is recorded.
    attrs:
        Band attributes to store (``scale_factor``/``add_offset`` for Sentinel-2 reflectance).
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
    def key(self) -> str:
        """Identity in the manifest: band, time and tile (or file name)."""
        tile = self.tile or Path(self.uri).name
        return f"{self.band}/{self.time.isoformat()}/{tile}"


def expand_sources(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Expand paths, folders, URLs and globs into a sorted list of file URIs."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[str] = []
    for src in sources:
        text = os.fspath(src)
        loc = parse_location(text)
        if loc.protocol == "file":
            if _GLOB_CHARS & set(text):
                matches = sorted(globlib.glob(os.path.expanduser(text), recursive=True))
            elif os.path.isdir(loc.path):
                matches = sorted(
                    str(p) for p in Path(loc.path).rglob("*") if p.suffix.lower() in
                    (".tif", ".tiff", ".jp2")
                )
            else:
                matches = [loc.path] if os.path.exists(loc.path) else []
            if not matches:
                raise SourceNotFoundError(
                    f"source {text!r} matches no file: check the path (globs need quotes in a "
                    "shell)"
                )
            found.extend(os.path.abspath(m) for m in matches)
        elif loc.protocol == "az":
            fs = filesystem_for(loc, storage_options)
            try:
                if _GLOB_CHARS & set(loc.path):
                    matches = sorted(fs.glob(loc.path))
                elif fs.isdir(loc.path):
                    matches = sorted(
                        p for p in fs.find(loc.path) if p.lower().endswith((".tif", ".tiff"))
                    )
                else:
                    matches = [loc.path] if fs.exists(loc.path) else []
            except OSError as exc:
                raise SourceNotFoundError(
                    f"cannot list {loc.url}: {redact(str(exc))[:200]}"
                ) from exc
            if not matches:
                raise SourceNotFoundError(f"source {loc.url} matches no blob")
            found.extend(f"az://{m}" for m in matches)
        else:
            raise InvalidSourceError(f"sources must be local paths or az:// URLs, got {text!r}")
    return sorted(dict.fromkeys(found))


def _fetch(uri: str, storage_options: Mapping[str, Any] | None, cache_dir: Path) -> tuple[str, str]:
    """Local path and fingerprint of ``uri`` (blobs are downloaded once into ``cache_dir``)."""
    loc = parse_location(uri)
    if loc.protocol == "file":
        st = os.stat(loc.path)
        return loc.path, f"{st.st_size}:{int(st.st_mtime)}"
    fs = filesystem_for(loc, storage_options)
    info = fs.info(loc.path)
    stamp = str(info.get("etag") or info.get("last_modified") or "")
    fingerprint = f"{info.get('size')}:{stamp}"
    digest = hashlib.sha1(f"{uri}|{fingerprint}".encode()).hexdigest()[:16]
    target = cache_dir / f"{digest}-{Path(loc.path).name}"
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".part")
        fs.get_file(loc.path, str(tmp))
        tmp.replace(target)
    return str(target), fingerprint


def inspect_source(
    uri: str,
    *,
    band: str | None = None,
    time: datetime | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Read the header of one source and say what it holds.

    Band and time come from the Sentinel-2 file name unless ``band``/``time`` are given.
    Multi-band files give one :class:`SourceInfo` per band, named from the band descriptions
    (or ``{band}_{i}``).

    Raises
    ------
    InvalidSourceError
        Not a raster GDAL can read, not georeferenced, or band/time cannot be determined.
    """
    cache = cache_dir or Path(tempfile.gettempdir()) / "parcelzarr-sources"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        local, fingerprint = _fetch(uri, storage_options, cache)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"source {uri} does not exist") from exc
    name = parse_s2_name(uri)
    band_name = band or (name.band if name else None)
    when = time or (name.time if name else None)
    if band_name is None:
        raise InvalidSourceError(
            f"cannot tell the band of {uri}: its name is not a Sentinel-2 band file name; pass "
            "--band NAME (Python: band=...)"
        )
    if when is None:
        raise InvalidSourceError(
            f"cannot tell the date of {uri}: pass --time YYYY-MM-DD (Python: time=...)"
        )
    try:
        with rasterio.open(local) as ds:
            if ds.driver not in ("GTiff", "COG", "JP2OpenJPEG"):
                raise InvalidSourceError(f"{uri} is a {ds.driver} file, not a GeoTIFF")
            if ds.crs is None:
                raise InvalidSourceError(
                    f"{uri} is not georeferenced (no CRS): assign one, e.g. gdal_edit.py -a_srs"
                )
            if ds.transform.is_identity or ds.transform.b != 0 or ds.transform.d != 0:
                raise InvalidSourceError(
                    f"{uri} has no north-up geotransform; warp it first (gdalwarp)"
                )
            count = ds.count
            descriptions = ds.descriptions
            info = {
                "crs_wkt": ds.crs.to_wkt(),
                "transform": tuple(ds.transform)[:6],
                "width": ds.width,
                "height": ds.height,
                "dtype": ds.dtypes[0],
                "nodata": ds.nodata,
            }
    except RasterioIOError as exc:
        raise InvalidSourceError(
            f"{uri} is not a readable GeoTIFF ({redact(str(exc))[:200]})"
        ) from exc
    attrs: dict[str, Any] = {}
    if name is not None and band is None and name.band not in ("SCL", "TCI"):
        attrs = {"scale_factor": 1e-4, "add_offset": boa_offset(name) * 1e-4,
                 "BOA_ADD_OFFSET": boa_offset(name), "units": "1", "long_name": name.band}
    if info["nodata"] is not None and np.isnan(info["nodata"]):
        info["nodata"] = float("nan")
    out = []
    for i in range(1, count + 1):
        bname = band_name if count == 1 else descriptions[i - 1] or f"{band_name}_{i}"
        out.append(
            SourceInfo(
                uri=uri,
                local_path=local,
                band=bname,
                tile=name.tile if name else None,
                time=when,
                band_index=i,
                fingerprint=fingerprint,
                attrs=attrs,
                **info,
            )
        )
    return out


def discover_sources(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    band: str | None = None,
    time: datetime | None = None,
    bands: Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Expand ``sources`` and inspect every file; keep only ``bands`` when given."""
    wanted = set(bands) if bands is not None else None
    result: list[SourceInfo] = []
    for uri in expand_sources(sources, storage_options):
        name = parse_s2_name(uri)
        if wanted is not None and band is None and name is not None and name.band not in wanted:
            continue
        result.extend(
            inspect_source(
                uri, band=band, time=time, storage_options=storage_options, cache_dir=cache_dir
            )
        )
    if wanted is not None:
        missing = wanted - {s.band for s in result}
        if missing:
            raise SourceNotFoundError(
                f"no source found for band(s) {sorted(missing)}; sources hold "
                f"{sorted({s.band for s in result})}"
            )
    return result
