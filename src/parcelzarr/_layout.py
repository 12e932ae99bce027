"""The store layout: how grids, coordinates and bands are laid out in Zarr v3.

A store is one Zarr v3 group with consolidated metadata. Each pixel grid is a subgroup named
``{crs}/{resolution}`` (e.g. ``utm16n/10m``) holding CF coordinates ``time``, ``y``, ``x``, a
``spatial_ref`` variable (CF grid mapping with ``crs_wkt`` and ``GeoTransform``, which rioxarray
reads) and one ``(time, y, x)`` array per band in its native dtype with ``_FillValue`` =
nodata. Attributes are those xarray and rioxarray read, so ``xr.open_zarr(url, group=grid)``
gives a georeferenced Dataset.
"""

from __future__ import annotations

import base64
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from ._commit import commit
from ._footprint import empty_value
from ._grid import GridSpec

__all__ = [
    "FORMAT_VERSION",
    "GRID_ATTR",
    "ROOT_ATTR",
    "TIME_UNITS",
    "BandInfo",
    "array_separator",
    "band_info",
    "commit",
    "create_band",
    "create_grid",
    "decode_fill_value",
    "default_compressor",
    "encode_fill_value",
    "geotransform",
    "grid_attrs",
    "grid_names",
    "grid_spec",
    "open_live",
    "open_root",
    "other_separator",
    "root_attrs",
]

FORMAT_VERSION = 1
ROOT_ATTR = "parcelzarr"
GRID_ATTR = "parcelzarr_grid"
TIME_UNITS = "seconds since 1970-01-01T00:00:00"
_TIME_CHUNK = 4096
_COORD_CHUNK = 4096
SEPARATORS = ("/", ".")


def default_compressor(level: int = 5) -> zarr.codecs.BloscCodec:
    """Blosc/zstd with byte shuffle: fast to decode, ~half of raw size on Sentinel-2 DNs."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")


def encode_fill_value(value: float | int | None, dtype: np.dtype[Any]) -> Any:
    """``_FillValue`` as xarray's Zarr v3 backend stores it (floats are base64 of a double)."""
    if value is None:
        return None
    if dtype.kind in "iu":
        return int(value)
    return base64.standard_b64encode(struct.pack("<d", float(value))).decode()


def decode_fill_value(value: Any, dtype: np.dtype[Any]) -> float | int | None:
    """Inverse of :func:`encode_fill_value`."""
    if value is None:
        return None
    if dtype.kind in "iu":
        return int(value)
    if isinstance(value, str):
        return float(struct.unpack("<d", base64.standard_b64decode(value))[0])
    return float(value)


class BandInfo(dict[str, Any]):
    """Attributes of one band array (dtype, nodata, scale, offset) as read from the store."""


def create_grid(root: zarr.Group, spec: GridSpec) -> zarr.Group:
    """Create the group, coordinates and grid mapping of ``spec`` (which must not exist).

    Attributes go in with each document (one write per node).
    """
    group = root.create_group(spec.name, attributes=grid_attrs(spec))
    _write_coords(group, spec)
    group.create_array(
        "time",
        shape=(0,),
        chunks=(_TIME_CHUNK,),
        dtype="int64",
        fill_value=0,
        dimension_names=("time",),
        compressors=None,
        attributes={"units": TIME_UNITS, "calendar": "proleptic_gregorian",
                    "standard_name": "time", "axis": "T"},
    )
    crs = spec.crs
    group.create_array(
        "spatial_ref", shape=(), dtype="int32", fill_value=0, compressors=None,
        attributes={
            "crs_wkt": crs.to_wkt(),
            "spatial_ref": crs.to_wkt(),
            "GeoTransform": geotransform(spec),
            **{k: v for k, v in crs.to_cf().items() if k != "crs_wkt"},
        },
    )
    return group


def array_separator(arr: zarr.Array) -> str:
    """The chunk key separator of ``arr`` (``/`` or ``.``)."""
    enc = arr.metadata.chunk_key_encoding  # type: ignore[union-attr]
    return str(getattr(enc, "separator", "/"))


def other_separator(sep: str) -> str:
    """The separator a relayout writes its new chunk keys with (never collides with ``sep``)."""
    return SEPARATORS[1] if sep == SEPARATORS[0] else SEPARATORS[0]


def root_attrs(grids: Sequence[str]) -> dict[str, Any]:
    """The root group's attributes: the store's format and grids, named so that a plain
    ``xr.open_zarr(url)`` (which opens the root, holding no arrays) shows where the data is."""
    grids = sorted(grids)
    return {
        ROOT_ATTR: {"format": FORMAT_VERSION, "grids": list(grids)},
        "grids": list(grids),
        "description": (
            "parcelzarr store: one group per pixel grid (CRS x resolution), listed in "
            "'grids'. Open one with xr.open_zarr(url, group=GRID), or all with "
            "xr.open_datatree(url, engine='zarr')."
        ),
    }


def grid_names(root: zarr.Group) -> list[str]:
    """Names of the grids a store's root lists."""
    meta = root.attrs.get(ROOT_ATTR) or {}
    return [str(n) for n in meta.get("grids", [])] if isinstance(meta, dict) else []


def geotransform(spec: GridSpec) -> str:
    """GDAL GeoTransform string of ``spec`` (as rioxarray reads it from ``spatial_ref``)."""
    t = spec.transform
    return f"{t.c!r} {t.a!r} {t.b!r} {t.f!r} {t.d!r} {t.e!r}"


def grid_attrs(spec: GridSpec) -> dict[str, Any]:
    """The grid group's attributes describing ``spec``."""
    return {GRID_ATTR: asdict(spec) | {"name": spec.name}}


def _write_coords(group: zarr.Group, spec: GridSpec, *, separator: str = "/") -> None:
    geographic = spec.crs.is_geographic
    for dim, values, size in (
        ("x", np.asarray(spec.x_coords()), spec.width),
        ("y", np.asarray(spec.y_coords()), spec.height),
    ):
        attrs: dict[str, Any]
        if geographic:
            attrs = {
                "standard_name": "longitude" if dim == "x" else "latitude",
                "units": "degrees_east" if dim == "x" else "degrees_north",
            }
        else:
            attrs = {"standard_name": f"projection_{dim}_coordinate", "units": "m"}
        arr = group.create_array(
            dim,
            shape=(size,),
            chunks=(_COORD_CHUNK,),
            dtype="float64",
            fill_value=0.0,
            dimension_names=(dim,),
            chunk_key_encoding={"name": "default", "separator": separator},
            overwrite=True,
            attributes={**attrs, "axis": dim.upper()},
        )
        arr[:] = values


def grid_spec(group: zarr.Group) -> GridSpec:
    """The :class:`GridSpec` recorded on a grid group."""
    raw: dict[str, Any] = dict(group.attrs[GRID_ATTR])  # type: ignore[arg-type]
    raw.pop("name", None)
    return GridSpec(**raw)


def create_band(
    group: zarr.Group,
    name: str,
    *,
    dtype: np.dtype[Any],
    nodata: float | int | None,
    n_times: int,
    compressor: zarr.codecs.BloscCodec | zarr.codecs.ZstdCodec | None = None,
    attrs: Mapping[str, Any] | None = None,
    time_chunk: int = 1,
    inner_chunk: int | None = None,
    spec: GridSpec | None = None,
) -> zarr.Array:
    """Create the ``(time, y, x)`` array of band ``name`` in a grid group.

    Objects are laid out on the grid's lattice (``spec.chunk_y`` x ``spec.chunk_x`` pixels by
    ``time_chunk`` dates). With ``inner_chunk`` each object is a shard of
    ``inner_chunk``-square chunks whose index sits at the *start* of the object (Azure Blob
    Storage serves no suffix byte ranges). ``spec`` is the grid's extent when it differs from
    the group's committed attributes (a grid growing in an uncommitted write).
    """
    spec = spec or grid_spec(group)
    fill = empty_value(np.dtype(dtype), nodata)
    outer = (time_chunk, spec.chunk_y, spec.chunk_x)
    layout: dict[str, Any] = {"chunks": outer}
    if inner_chunk is not None and inner_chunk < max(spec.chunk_y, spec.chunk_x):
        layout = {"shards": {"shape": outer, "index_location": "start"},
                  "chunks": (time_chunk, inner_chunk, inner_chunk)}
    band_attrs: dict[str, Any] = {
        "grid_mapping": "spatial_ref",
        "coordinates": "spatial_ref",
    }
    if nodata is not None:
        band_attrs["_FillValue"] = encode_fill_value(nodata, np.dtype(dtype))
    band_attrs.update(attrs or {})
    return group.create_array(
        name,
        shape=(n_times, spec.height, spec.width),
        **layout,
        dtype=dtype,
        fill_value=fill,
        compressors=compressor or default_compressor(),
        dimension_names=("time", "y", "x"),
        attributes=band_attrs,
        # Chunks that are entirely nodata are not written: absent chunk == fill value.
        config={"write_empty_chunks": False},
    )


def band_info(arr: zarr.Array) -> BandInfo:
    """dtype, nodata, scale and offset of a band array."""
    attrs = arr.attrs
    dtype = np.dtype(str(arr.dtype))
    return BandInfo(
        dtype=dtype,
        nodata=decode_fill_value(attrs.get("_FillValue"), dtype),
        scale_factor=attrs.get("scale_factor"),
        add_offset=attrs.get("add_offset"),
    )


def open_live(store: Any, path: str) -> zarr.Group:
    """The *live* (uncommitted) view of the group at ``path``, for writers.

    A group opened through its parent carries its own consolidated metadata, i.e. the last
    commit; a writer must see what is really in the store.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return zarr.open_group(store, path=path, mode="r+", zarr_format=3,
                               use_consolidated=False)


def open_root(store: Any, *, write: bool = False) -> zarr.Group:
    """The root group: consolidated (committed) view for reading, live view for writing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        if write:
            return zarr.open_group(store, mode="a", zarr_format=3, use_consolidated=False)
        return zarr.open_group(store, mode="r", zarr_format=3, use_consolidated=True)
