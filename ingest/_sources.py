"""Discover ingest sources: expand paths, URLs and globs; read and validate GeoTIFF headers."""

from __future__ import annotations

import glob as globlib
import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from parcelzarr.stores import filesystem_for, parse_location, redact
from rasterio.errors import RasterioIOError

from parcelzarr.errors import IngestConflictError, InvalidSourceError, SourceNotFoundError

from ._names import S2Name, boa_offset, parse_s2_name

__all__ = ["SourceInfo", "discover_sources", "expand_sources", "fetch_source", "inspect_source"]

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
        What the manifest records of the file's content: ``"sha256:<hex>"`` of its bytes once
        :func:`~parcelzarr.ingest.ingest` has resolved it (see ``stamp``), the stamp before.
        An ingest skips a source whose fingerprint is recorded under its key.
    attrs:
        Band attributes to store (``scale_factor``/``add_offset`` for Sentinel-2 reflectance).
    dn_shift:
        Added to valid pixels when written: +1000 for Sentinel-2 L2A reflectance from
        processing baselines before 04.00, so every date of a band is stored in the current
        convention (reflectance = (DN - 1000) / 10000). See :func:`boa_offset`.
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
    stamp: str = ""

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


def fetch_source(uri: str, storage_options: Mapping[str, Any] | None, cache_dir: Path) -> str:
    """A local path holding ``uri`` (a blob is downloaded once into ``cache_dir``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return _fetch(uri, storage_options, cache_dir)[0]


def _fetch(uri: str, storage_options: Mapping[str, Any] | None, cache_dir: Path) -> tuple[str, str]:
    """Local path and stamp of ``uri`` (blobs are downloaded once into ``cache_dir``)."""
    loc = parse_location(uri)
    if loc.protocol == "file":
        st = os.stat(loc.path)
        return loc.path, f"{st.st_size}:{st.st_mtime_ns}"
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


_S2_NATIVE_RES = {**dict.fromkeys(("B02", "B03", "B04", "B08"), 10),
                   **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12", "SCL"), 20),
                   **dict.fromkeys(("B01", "B09", "B10"), 60)}
_NON_REFLECTANCE = ("SCL", "TCI", "AOT", "WVP")


def _check_readable(ds: Any, uri: str) -> None:
    """Decode the first and last block of every band: catches truncated files up front."""
    from rasterio.windows import Window

    bh, bw = ds.block_shapes[0]
    last_r, last_c = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
    windows = {Window(0, 0, min(bw, ds.width), min(bh, ds.height)),
               Window(last_c, last_r, ds.width - last_c, ds.height - last_r)}
    for bidx in range(1, ds.count + 1):
        for win in windows:
            ds.read(bidx, window=win)
    del uri


def _s2_attrs(band: str, baseline_offset: int) -> tuple[dict[str, Any], int]:
    """Attributes of an L2A reflectance band and the DN shift into the current convention."""
    if band in _NON_REFLECTANCE:
        return {}, 0
    attrs = {"scale_factor": 1e-4, "add_offset": -0.1, "BOA_ADD_OFFSET": -1000, "units": "1",
             "long_name": f"{band} surface reflectance",
             "dn_convention": "processing baseline >= 04.00 (BOA_ADD_OFFSET -1000); older "
                              "dates were shifted by +1000 DN when ingested"}
    return attrs, baseline_offset + 1000


def inspect_source(
    uri: str,
    *,
    band: str | None = None,
    time: datetime | None = None,
    band_times: Sequence[datetime] | None = None,
    tile: str | None = None,
    baseline: str | None = None,
    s2: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Read the header of one source and say what it holds.

    Band and time come from the Sentinel-2 file name unless ``band``/``time`` are given.
    Multi-band files give one :class:`SourceInfo` per band, named from the band descriptions
    (or ``{band}_{i}``); with ``band_times`` band ``i`` is date ``band_times[i]`` of one band.

    Raises
    ------
    InvalidSourceError
        Not a raster GDAL can read, truncated, not georeferenced, a Sentinel-2 band at a
        resolution its name contradicts, or band/time cannot be determined.
    """
    cache = cache_dir or Path(tempfile.gettempdir()) / "parcelzarr-sources"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        local, stamp = _fetch(uri, storage_options, cache)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"source {uri} does not exist") from exc
    name = parse_s2_name(uri)
    if name is not None and baseline is not None:
        name = replace(name, baseline=baseline)
    is_s2 = (name is not None and band is None) if s2 is None else s2
    band_name = band or (name.band if name else None)
    when = time or (name.time if name else None)
    if band_name is None:
        raise InvalidSourceError(
            f"cannot tell the band of {uri}: its name is not a Sentinel-2 band file name; pass "
            "--band NAME (Python: band=...)"
        )
    if is_s2 and band_name is not None:
        name = S2Name(band_name, tile or (name.tile if name else None), when,
                      baseline or (name.baseline if name else None))
    if when is None and band_times is None:
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
            _check_readable(ds, uri)
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
            res = ds.res
    except RasterioIOError as exc:
        raise InvalidSourceError(
            f"{uri} is not a readable GeoTIFF, or is truncated ({redact(str(exc))[:200]}); "
            "download it again"
        ) from exc
    if is_s2 and name is not None:
        stem_res = re.search(r"_(\d{2})m(?:\.|$)", uri.rsplit("/", 1)[-1])
        expect = int(stem_res.group(1)) if stem_res else None
        if expect is not None and not all(math.isclose(r, expect) for r in res):
            raise IngestConflictError(
                f"{uri} says {expect} m in its name but its pixels are {res[0]:g} x {res[1]:g}; "
                "fix the file name or the file"
            )
        if expect is None and name.band in _S2_NATIVE_RES and ds_is_projected(info) and not any(
            math.isclose(res[0], r) for r in (10, 20, 60)
        ):
            raise IngestConflictError(
                f"{uri} is Sentinel-2 band {name.band} at {res[0]:g} m; Sentinel-2 bands come at "
                "10, 20 or 60 m (resampled files must be ingested as a named layer: --band)"
            )
    attrs: dict[str, Any] = {}
    shift = 0
    if is_s2 and name is not None:
        attrs, shift = _s2_attrs(name.band, boa_offset(name))
    if info["nodata"] is not None and np.isnan(info["nodata"]):
        info["nodata"] = float("nan")
    if band_times is not None and len(band_times) != count:
        raise InvalidSourceError(
            f"{uri} has {count} band(s) but {len(band_times)} date(s) were given (times=/"
            "--time-from-bands): give one date per band"
        )
    out = []
    for i in range(1, count + 1):
        if band_times is not None or count == 1:
            bname = band_name
        else:
            desc = descriptions[i - 1]
            generic = desc is None or re.fullmatch(r"(?i)band[ _]?\d+", desc.strip() or "b1")
            bname = f"{band_name}_{i}" if generic else desc.strip()
        out.append(
            SourceInfo(
                uri=uri,
                local_path=local,
                band=bname,
                tile=tile or (name.tile if name else None),
                time=band_times[i - 1] if band_times is not None else when,  # type: ignore[arg-type]
                band_index=i,
                fingerprint=stamp,
                attrs=attrs,
                dn_shift=shift,
                stamp=stamp,
                **info,
            )
        )
    return out


def ds_is_projected(info: Mapping[str, Any]) -> bool:
    """Whether a header's CRS is projected (metres)."""
    from pyproj import CRS

    return bool(CRS.from_wkt(info["crs_wkt"]).is_projected)


def discover_sources(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    band: str | None = None,
    time: datetime | None = None,
    band_times: Sequence[datetime] | None = None,
    bands: Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Expand ``sources`` (files, globs, STAC JSON) and inspect every file.

    Keeps only ``bands`` when given. Every source is read and checked here, before an ingest
    writes anything.
    """
    from ._stac import is_stac_path, stac_sources

    wanted = set(bands) if bands is not None else None
    result: list[SourceInfo] = []
    for uri in expand_sources(sources, storage_options):
        if is_stac_path(uri):
            for asset in stac_sources(uri, storage_options=storage_options, bands=wanted):
                result.extend(inspect_source(
                    asset.href, band=band or asset.band, time=time or asset.time,
                    tile=asset.tile, baseline=asset.baseline, s2=band is None,
                    storage_options=storage_options, cache_dir=cache_dir,
                ))
            continue
        name = parse_s2_name(uri)
        if wanted is not None and band is None and name is not None and name.band not in wanted:
            continue
        result.extend(
            inspect_source(
                uri, band=band, time=time, band_times=band_times,
                storage_options=storage_options, cache_dir=cache_dir,
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
