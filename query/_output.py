"""Writing zonal statistics: Parquet, GeoParquet 1.1 (with the parcel geometry and a bbox
covering column), CSV or a PostgreSQL table (``postgresql://...?table=NAME``); a vector cube
to Zarr or netCDF (xvec's CF encoding)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import xarray as xr

from ._parcels import load_parcels
from ._pg import is_postgres_url
from ._pg_sink import to_postgis

__all__ = ["CUBE_SUFFIXES", "write_cube", "write_stats"]

#: Outputs a vector cube is written to.
CUBE_SUFFIXES = (".zarr", ".nc")


def write_stats(df: pd.DataFrame, out: Path | str, *, parcels: Any = None,
                id_column: str | None = None, geometry: bool = False,
                layer: str | None = None, crs: Any = None) -> Path | str:
    """Write ``df`` to ``out`` (``.parquet``, ``.geoparquet``, ``.csv`` or a
    ``postgresql://...?table=NAME`` URL: see :func:`to_postgis`, rows of the same parcel,
    band and time replaced).

    With ``geometry`` each row gets its parcel's geometry (in the parcels' CRS), joined on
    the id column (``layer``: the parcels file's layer; ``crs``: their CRS if they declare
    none): GeoParquet for ``.parquet``, a WKT ``geometry`` column for ``.csv``, a PostGIS
    ``geometry`` column (with a GiST index) in a PostgreSQL table. ``.geoparquet`` always
    holds the geometry (a GeoParquet file without one would not be GeoParquet). GeoParquet
    is written as version 1.1 with a ``bbox`` covering column (xmin, ymin, xmax, ymax per
    row), which readers use to skip row groups outside a query window.
    """
    postgres = is_postgres_url(out)
    suffix = "" if postgres else Path(out).suffix.lower()
    if not postgres and suffix not in (".parquet", ".geoparquet", ".csv"):
        raise ValueError(f"cannot write {Path(out).name}: the output must end in .parquet, "
                         ".geoparquet or .csv")
    geometry = geometry or suffix == ".geoparquet"
    frame: pd.DataFrame = df
    if geometry:
        if parcels is None:
            raise ValueError("geometry=True (or a .geoparquet output) needs the parcels")
        pset = load_parcels(parcels, id_column=id_column, layer=layer, crs=crs)
        geoms = pd.Series(pset.geometry, index=pset.ids.to_numpy())
        frame = gpd.GeoDataFrame(df, geometry=geoms.loc[df[pset.ids.name].to_numpy()].to_numpy(),
                                 crs=pset.crs)
    if postgres:
        assert isinstance(out, str)
        to_postgis(frame, out)
        return out
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # written whole to a partial file of this call, then renamed: an error or Ctrl-C
    # mid-write leaves no half file and an earlier output as it was
    partial = out.with_name(f"{out.name}.{secrets.token_hex(6)}.partial")
    try:
        if suffix == ".csv":
            if isinstance(frame, gpd.GeoDataFrame):
                frame = pd.DataFrame(frame.assign(geometry=frame.geometry.to_wkt()))
            frame.to_csv(partial, index=False)
        elif isinstance(frame, gpd.GeoDataFrame):
            frame.to_parquet(partial, index=False, schema_version="1.1.0",
                             write_covering_bbox=True)
        else:
            frame.to_parquet(partial, index=False)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def write_cube(cube: xr.Dataset, out: Path) -> Path:
    """Write a vector cube (``zonal_stats(..., output="xarray")``) to ``.zarr`` or ``.nc``,
    geometries and CRS encoded with xvec's CF encoding; read it back with
    ``xr.open_dataset(out).xvec.decode_cf()`` (``xr.open_zarr`` for ``.zarr``)."""
    suffix = out.suffix.lower()
    if suffix not in CUBE_SUFFIXES:
        raise ValueError(f"cannot write a cube to {out.name}: the output must end in "
                         f"{' or '.join(CUBE_SUFFIXES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    encoded = cube.xvec.encode_cf()
    if suffix == ".zarr":
        encoded.to_zarr(out, mode="w")
    else:
        encoded.to_netcdf(out)
    return out
