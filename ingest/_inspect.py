"""Read one source's header and say what it holds (band names, date, grid, nodata, scaling),
rejecting what cannot be ingested before anything is written."""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from parcelzarr.stores._azure import redact
from parcelzarr.stores._errors import storage_error
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError

from parcelzarr import _sentinel2 as sentinel2
from parcelzarr.errors import IngestConflictError, InvalidSourceError, SourceNotFoundError

from ._expand import fetch_stamped
from ._names import S2Name, boa_offset, check_layer_name, is_layer_name, parse_s2_name
from ._sources import SourceInfo

__all__ = ["description_names", "ds_is_projected", "has_dataset_mask", "inspect_source",
           "north_up"]

logger = logging.getLogger(__name__)


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
    attrs = sentinel2.reflectance_attrs(band)
    if not attrs:
        return {}, 0
    return attrs, baseline_offset - sentinel2.BOA_ADD_OFFSET


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


_GENERIC = re.compile(r"(?i)band[ _]?\d+")


_RESERVED = frozenset({"time", "x", "y", "spatial_ref", "inside"})


def description_names(descriptions: Sequence[str | None]) -> list[str] | None:
    """Band names taken from a multi-band file's band descriptions, when every description is
    a usable name (``B02``, ``red``, ``NDVI_mean``: a letter, then letters, digits, ``_``;
    not ``Band 1``; distinct); else None (pure)."""
    names = [(d or "").strip() for d in descriptions]
    if len(set(names)) != len(names):
        return None
    for n in names:
        if not _NAME.fullmatch(n) or _GENERIC.fullmatch(n) or n in _RESERVED:
            return None
    return names


def _band_names(uri: str, count: int, descriptions: Sequence[str | None],
                band: str | None, band_name: str | None, band_times: object) -> list[str]:
    """The store band name of each band of a file (see :func:`inspect_source`)."""
    if band_times is not None or count == 1:
        if band_name is None:
            raise InvalidSourceError(
                f"cannot tell the band of {uri}: its name is not a Sentinel-2 band file name; "
                "pass --band NAME (Python: band=...)")
        return [band_name] * count
    named = description_names(descriptions)
    if named is not None:
        if band is not None:
            logger.warning("--band %s is not used for %s: its bands are named by their "
                           "descriptions (%s)", band, uri, ", ".join(named))
        return named
    if band_name is None:
        shown = ", ".join(repr(d) for d in descriptions[:4]) + (" ..." if count > 4 else "")
        raise InvalidSourceError(
            f"cannot tell the band names of {uri}: its {count} band descriptions ({shown}) are "
            f"not usable names; pass --band NAME (bands become NAME_1 ... NAME_{count})")
    out = []
    for i, desc in enumerate(descriptions, start=1):
        text = (desc or "").strip()
        out.append(f"{band_name}_{i}" if not text or _GENERIC.fullmatch(text) else text)
    return out


def has_dataset_mask(ds: Any) -> bool:
    """Whether a file without nodata marks invalid cells with a mask band or alpha (GDAL's
    per-dataset mask), as rasterio's ``read_masks`` and rasterstats honour."""
    return any(MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
               for flags in ds.mask_flag_enums)


def _mask_nodata(ds: Any, uri: str) -> float | int:
    """The nodata a masked source is stored with: NaN for floats, else the dtype's largest
    value, which no unmasked cell may hold (checked on the whole file)."""
    dtype = np.dtype(ds.dtypes[0])
    if dtype.kind == "f":
        return float("nan")
    value = int(np.iinfo(dtype).max)
    for i in range(1, ds.count + 1):
        data, mask = ds.read(i), ds.read_masks(i)
        if np.any((data == value) & (mask != 0)):
            raise InvalidSourceError(
                f"{uri} marks invalid cells with a mask but declares no nodata, and its valid "
                f"cells use every candidate value ({value} included): declare a nodata value "
                "(gdal_edit.py -a_nodata V) and ingest again")
    logger.info("%s: masked cells are stored as nodata %d", uri, value)
    return value


def _layer_attrs(uri: str, scale: float | None, offset: float | None,
                 stac: tuple[float | None, float | None] | None,
                 gdal: tuple[float, float]) -> dict[str, Any]:
    """``scale_factor``/``add_offset`` of a named layer: declared by the user, else by its
    STAC item, else by the GeoTIFF's own band metadata; none when nothing declares one."""
    declared: list[tuple[float | None, float | None]] = [
        (scale, offset), stac or (None, None), gdal if gdal != (1.0, 0.0) else (None, None)]
    for sc, off in declared:
        if sc is not None or off is not None:
            sc = 1.0 if sc is None else float(sc)
            off = 0.0 if off is None else float(off)
            if not (math.isfinite(sc) and math.isfinite(off)) or sc == 0:
                raise InvalidSourceError(
                    f"{uri}: scale {sc:g} and offset {off:g} are not usable (scale must be a "
                    "finite non-zero number)")
            return {"scale_factor": sc, "add_offset": off}
    return {}


def _s2_shift_from_stac(uri: str, band: str, shift: int,
                        stac: tuple[float | None, float | None] | None) -> int:
    """The DN shift of a Sentinel-2 reflectance asset whose STAC item declares its scale and
    offset: the stored convention stays ``(DN − 1000) / 10000``, so the shift is what maps
    the asset's declared offset onto −0.1."""
    if stac is None or (stac[0] is None and stac[1] is None):
        return shift
    sc = 1e-4 if stac[0] is None else stac[0]
    off = -0.1 if stac[1] is None else stac[1]
    steps = (off + 0.1) / 1e-4
    if not math.isclose(sc, 1e-4, rel_tol=1e-6) or abs(steps - round(steps)) > 1e-3:
        raise InvalidSourceError(
            f"{uri}: its STAC item declares scale {sc:g} and offset {off:g} for {band}; "
            "Sentinel-2 reflectance is stored as DN * 0.0001 - 0.1, so the scale must be "
            "0.0001 and the offset a whole number of DN steps from -0.1")
    if round(steps) != shift:
        logger.warning("%s: the STAC item's offset %g for %s disagrees with its processing "
                       "baseline; following the STAC item", uri, off, band)
    return round(steps)


def inspect_source(
    uri: str,
    *,
    band: str | None = None,
    time: datetime | None = None,
    band_times: Sequence[datetime] | None = None,
    tile: str | None = None,
    baseline: str | None = None,
    s2: bool | None = None,
    scale: float | None = None,
    offset: float | None = None,
    stac_scaling: tuple[float | None, float | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> list[SourceInfo]:
    """Read the header of one source and say what it holds.

    Band and time come from the Sentinel-2 file name unless ``band``/``time`` are given.
    Multi-band files give one :class:`SourceInfo` per band, named from the band descriptions
    when they are all usable names (``B02``, ``B03``, ...; ``band`` is then not needed), else
    ``{band}_{i}``; with ``band_times`` band ``i`` is date ``band_times[i]`` of one band.

    Named layers get ``scale_factor``/``add_offset`` from ``scale``/``offset``, else from
    ``stac_scaling`` (the STAC raster extension), else from the GeoTIFF's band metadata.
    Sentinel-2 reflectance bands always store ``(DN − 1000) / 10000``; a STAC-declared offset
    decides the DN shift that gets them there.

    Raises
    ------
    InvalidSourceError
        Not a raster GDAL can read, truncated, not georeferenced, a Sentinel-2 band at a
        resolution its name contradicts, band/time cannot be determined, or a scale/offset
        that cannot apply.
    """
    cache = cache_dir or Path(tempfile.gettempdir()) / "parcelzarr-sources"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        local, stamp = fetch_stamped(uri, storage_options, cache)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"source {uri} does not exist") from exc
    except Exception as exc:  # 403, dead service: one typed line
        err = storage_error(exc, where=uri, what="download")
        if err is None:
            raise
        raise err from exc
    name = parse_s2_name(uri)
    if name is not None and baseline is not None:
        name = replace(name, baseline=baseline)
    is_s2 = (name is not None and band is None) if s2 is None else s2
    band_name = band or (name.band if name else None)
    when = time or (name.time if name else None)
    if is_s2 and band_name is not None:
        name = S2Name(band_name, tile or (name.tile if name else None), when,
                      baseline or (name.baseline if name else None))
    if is_s2 and (scale is not None or offset is not None):
        raise InvalidSourceError(
            f"{uri} is a Sentinel-2 band file, whose reflectance convention is fixed "
            "(DN * 0.0001 - 0.1); --scale/--offset (Python scale=, offset=) declare the "
            "reflectance of named layers (ingested with --band)")
    try:
        with rasterio.open(local) as ds:
            if ds.driver not in ("GTiff", "COG", "JP2OpenJPEG"):
                raise InvalidSourceError(f"{uri} is a {ds.driver} file, not a GeoTIFF")
            if ds.crs is None:
                raise InvalidSourceError(
                    f"{uri} is not georeferenced (no CRS): assign one, e.g. gdal_edit.py -a_srs"
                )
            t = ds.transform
            if t.is_identity or t.b != 0 or t.d != 0 or t.a <= 0 or t.e == 0:
                raise InvalidSourceError(
                    f"{uri} has no north-up (or south-up) geotransform: it is rotated, mirrored "
                    "east-west or not georeferenced; warp it first (gdalwarp)"
                )
            south_up = t.e > 0
            count = ds.count
            names = _band_names(uri, count, ds.descriptions, band, band_name, band_times)
            renamed = [n for n in names if not is_layer_name(n)]
            if renamed and band_name is not None:  # descriptions that cannot name a layer
                names = [n if is_layer_name(n) else f"{band_name}_{i}"
                         for i, n in enumerate(names, start=1)]
            names = [check_layer_name(n) for n in names]
            if when is None and band_times is None:
                raise InvalidSourceError(
                    f"cannot tell the date of {uri}: pass --time YYYY-MM-DD (Python: time=...)"
                )
            _check_readable(ds, uri)
            gdal_scaling = [(float(a), float(b)) for a, b in zip(ds.scales, ds.offsets,
                                                                    strict=True)]
            info = {
                "crs_wkt": ds.crs.to_wkt(),
                "transform": north_up(tuple(t)[:6], ds.height),
                "width": ds.width,
                "height": ds.height,
                "dtype": ds.dtypes[0],
                "nodata": ds.nodata,
            }
            masked = info["nodata"] is None and has_dataset_mask(ds)
            if masked:  # masked cells need a value that means "no data" in the store
                info["nodata"] = _mask_nodata(ds, uri)
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
        native = set(sentinel2.NATIVE_RESOLUTION.values())
        if expect is None and name.band in sentinel2.NATIVE_RESOLUTION and ds_is_projected(
                info) and not any(math.isclose(res[0], r) for r in native):
            raise IngestConflictError(
                f"{uri} is Sentinel-2 band {name.band} at {res[0]:g} m; Sentinel-2 bands come at "
                "10, 20 or 60 m (resampled files must be ingested as a named layer: --band)"
            )
    s2_attrs: dict[str, Any] | None = None
    shift = 0
    if is_s2 and name is not None:
        s2_attrs, shift = _s2_attrs(name.band, boa_offset(name))
        if s2_attrs:
            shift = _s2_shift_from_stac(uri, name.band, shift, stac_scaling)
    if info["nodata"] is not None and np.isnan(info["nodata"]):
        info["nodata"] = float("nan")
    if band_times is not None and len(band_times) != count:
        raise InvalidSourceError(
            f"{uri} has {count} band(s) but {len(band_times)} date(s) were given (times=/"
            "--time-from-bands): give one date per band"
        )
    out = []
    for i in range(1, count + 1):
        attrs = (s2_attrs if s2_attrs is not None
                 else _layer_attrs(uri, scale, offset, stac_scaling, gdal_scaling[i - 1]))
        out.append(
            SourceInfo(
                uri=uri,
                local_path=local,
                band=names[i - 1],
                tile=tile or (name.tile if name else None),
                time=band_times[i - 1] if band_times is not None else when,  # type: ignore[arg-type]
                band_index=i,
                fingerprint=stamp,
                attrs=attrs,
                dn_shift=shift,
                south_up=south_up,
                masked=masked,
                stamp=stamp,
                **info,
            )
        )
    if renamed:
        logger.warning("%d band description(s) of %s cannot name a layer (e.g. %r; names are a "
                       "letter, then letters, digits, _ or -): stored as %s_<band number>",
                       len(renamed), uri, renamed[0][:40], band_name)
    return out


def north_up(transform: tuple[float, ...], height: int
              ) -> tuple[float, float, float, float, float, float]:
    """The north-up transform of the same pixels: a south-up one (positive ``e``) has its
    origin moved to the northern edge and ``e`` negated; its rows are read flipped."""
    a, b, c, d, e, f = (float(v) for v in transform)
    if e > 0:
        return (a, b, c, d, -e, f + e * height)
    return (a, b, c, d, e, f)


def ds_is_projected(info: Mapping[str, Any]) -> bool:
    """Whether a header's CRS is projected (metres)."""
    from pyproj import CRS

    return bool(CRS.from_wkt(info["crs_wkt"]).is_projected)
